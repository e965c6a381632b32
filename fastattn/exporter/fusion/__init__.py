"""fuse: the rest of each Transformer block, after attention is declared (and maybe lowered).

    fuse(model, contrib_ops, expected={rule: count}) -> FusionReport   (expected counts: the model family)

One ordered registry of rules (:mod:`.registry`), one per file; each emits ONNX Runtime
contrib ops or, for targets without them, standard ONNX ops:

    rule             contrib                                standard
    layer_norm       LayerNormalization (counted)           LayerNormalization (counted)
    rms_norm         SimplifiedLayerNormalization           RMSNormalization (opset 23)
    skip_layer_norm  com.microsoft::SkipLayerNormalization  -
    skip_rms_norm    com.microsoft::SkipSimplifiedLayerNormalization  -
    gelu             com.microsoft::Gelu / Gelu (counted)   Gelu (opset 20)
    fast_gelu        com.microsoft::FastGelu                Gelu(approximate=tanh)
    bias_gelu        com.microsoft::BiasGelu                -
    rotary           com.microsoft::RotaryEmbedding         RotaryEmbedding (opset 23)
    packed_qkv       MatMul + Split                         MatMul + Split

``fastattn::Attention`` nodes and their function bodies are left exactly as they are.
"""

from fastattn.exporter.fusion.fuse import FusionReport, Shortfall, fuse
from fastattn.exporter.fusion.registry import REGISTRY, RULE_NAMES

__all__ = ["REGISTRY", "RULE_NAMES", "FusionReport", "Shortfall", "fuse"]
