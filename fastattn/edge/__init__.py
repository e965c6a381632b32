"""Edge packaging: ORT-format models for minimal ONNX Runtime builds, and onnxruntime-web (wasm, webgpu).

- :mod:`.ort_format`: ``model.ort`` + ``required_operators.config`` beside an export's ``.onnx``,
  validated against it (``fastattn package out/ --ort``, ``fastattn-export --package ort``).
- :mod:`.web`: the onnxruntime-web worker (Node) that measures exports and lowering candidates on
  the WebAssembly EP, as the ``wasm`` provider of ``fastattn bench``.
"""
