"""The fastattn attention op in its three forms: spec (torch-free), PyTorch op, ONNX function."""

from fastattn.attention.spec import AttentionSpec

__all__ = ["AttentionSpec"]
