"""Rotary inverse frequencies, with Hugging Face's ``linear`` and ``llama3`` scalings.

One formula for the PyTorch model (:class:`fastattn.models.layers.Rotary`) and for the
cos/sin tables the ``--kv-buffer`` path folds into GroupQueryAttention, so both rotate alike;
computed with the same float32 torch ops as transformers' ``modeling_rope_utils``.

    default  inv_freq[i] = theta ** (-2i / D)
    linear   inv_freq / factor                     (positions divided by factor)
    llama3   wavelengths longer than original_max_positions / low_freq_factor: inv_freq / factor;
             shorter than original_max_positions / high_freq_factor: kept; between: a smooth blend
"""

from __future__ import annotations

import math

import torch

from fastattn.models.config import RopeKind, RopeScaling


def inverse_frequencies(head_size: int, theta: float, scaling: RopeScaling | None = None) -> torch.Tensor:
    """float32 (head_size / 2,) inverse frequencies of the rotate-half convention."""
    inv = 1.0 / theta ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
    if scaling is None:
        return inv
    if scaling.kind is RopeKind.LINEAR:
        return inv / scaling.factor
    low_wavelen = scaling.original_max_positions / scaling.low_freq_factor
    high_wavelen = scaling.original_max_positions / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / scaling.factor, inv)
    smooth = (scaling.original_max_positions / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, blended, scaled)
