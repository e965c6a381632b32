"""The torch-free runtime: load an output directory of ``fastattn export`` and run it with ONNX Runtime.

    import fastattn.runtime as rt
    model = rt.load("out/", provider="cpu")
    outputs = model.run({"input_ids": ids, "attention_mask": mask})

Imports only onnxruntime, NumPy and the standard library (no torch, onnx or onnxscript), so
an application can ship an export with nothing else.
"""

from fastattn.runtime.generate import Generation, Sampling
from fastattn.runtime.manifest import Fill, GraphEntry, Manifest, TensorSpec
from fastattn.runtime.providers import Provider, ProviderInfo, available_providers
from fastattn.runtime.providers import resolve as resolve_providers
from fastattn.runtime.samples import sample_inputs
from fastattn.runtime.session import ExportedModel, GraphSession, SessionConfig, check_inputs, load
from fastattn.runtime.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

__all__ = [
    "ByteTokenizer",
    "ExportedModel",
    "Fill",
    "Generation",
    "GraphEntry",
    "GraphSession",
    "HFTokenizer",
    "Manifest",
    "Provider",
    "ProviderInfo",
    "Sampling",
    "SessionConfig",
    "TensorSpec",
    "available_providers",
    "check_inputs",
    "load",
    "load_tokenizer",
    "resolve_providers",
    "sample_inputs",
]
