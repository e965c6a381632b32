"""fastattn: efficient-attention Transformers to fast, validated ONNX models."""

__version__ = "0.1.0"
