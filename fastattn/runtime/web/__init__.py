"""onnxruntime-web (WebAssembly, WebGPU) reached through Node.js: bench rows and lowering measurements.

Torch-free and light: ``fastattn bench`` and the exporter import :data:`PROVIDERS` at start-up.
"""

from __future__ import annotations

PROVIDERS = ("wasm", "webgpu")  # onnxruntime-web's execution providers fastattn measures


def is_web(provider: str) -> bool:
    return provider.strip().lower() in PROVIDERS
