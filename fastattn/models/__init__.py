"""The fastattn Transformer family (PyTorch) and its checkpoint format."""

from fastattn.models.checkpoint import load, save
from fastattn.models.config import Arch, LayerAttention, ModelConfig, Pattern
from fastattn.models.presets import PRESETS, preset
from fastattn.models.transformer import DecoderModel, EncoderDecoderModel, EncoderModel, FastAttnModel

__all__ = [
    "Arch", "DecoderModel", "EncoderDecoderModel", "EncoderModel", "FastAttnModel", "LayerAttention",
    "ModelConfig", "PRESETS", "Pattern", "load", "preset", "save",
]  # fmt: skip


def build(config: ModelConfig, seed: int = 0) -> FastAttnModel:
    """A freshly initialised model in eval mode (deterministic for a given seed)."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return FastAttnModel.from_config(config).eval()
