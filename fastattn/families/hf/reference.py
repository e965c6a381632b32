"""The transformers model itself, behind the flat signature of fastattn's graphs: what validation compares to.

    encoder          (input_ids, attention_mask) -> last_hidden_state
    decoder          (input_ids, attention_mask, past_key_i, past_value_i, ...) -> logits, present_*
    seq2seq encoder  (input_ids, attention_mask) -> encoder_hidden_states, cross_key_i, cross_value_i, ...
    seq2seq decoder  (input_ids, attention_mask, encoder_attention_mask, cross_*, past_*) -> logits, present_*

Caches go through transformers' own classes: flat pasts become a ``DynamicCache`` built from
the model's config (windowed layers are ``DynamicSlidingWindowLayer``s, which keep W-1
positions like fastattn's trimmed caches; their ``cumulative_length`` is the sequence so far,
read from the mask), and the presents are the cache the model returns. Decoder positions come
from the mask (``cumsum - 1``), as ``generate`` computes them for left-padded batches. Encoder-
decoders' cross keys/values are projected by the decoder's own ``encoder_attn`` modules and
handed back in an ``EncoderDecoderCache`` marked as filled, so the model reuses them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastattn.errors import LoadError
from fastattn.families.hf.spec import AUTO_CLASSES, Architecture, Task

log = logging.getLogger(__name__)


def load_reference(source: Path | nn.Module, task: Task) -> Any:
    """The transformers model (eager attention, float32, eval mode) of a checkpoint directory or object."""
    import transformers

    if isinstance(source, nn.Module):
        source.set_attn_implementation("eager")
        return source.float().eval()
    auto = getattr(transformers, AUTO_CLASSES[task])
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "newly initialized pooler" and friends: the report says what is unused
    try:
        model = auto.from_pretrained(source, local_files_only=True, attn_implementation="eager", dtype=torch.float32)
    except Exception as e:  # transformers raises many kinds for a checkpoint it cannot build
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LoadError(f"transformers cannot load {source} as {AUTO_CLASSES[task]}: {text}",
                        "check the checkpoint with transformers itself") from e  # fmt: skip
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model.eval()


def positions_from_mask(mask: torch.Tensor, new: int) -> torch.Tensor:
    """Positions of the last ``new`` tokens: ``cumsum(mask) - 1`` (what ``generate`` passes for padded rows)."""
    return (mask.long().cumsum(-1)[:, mask.shape[1] - new :] - 1).clamp(min=0)


def _pairs(flat) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(flat[0::2], flat[1::2]))


def _flat(cache) -> tuple[torch.Tensor, ...]:
    return tuple(t for layer in cache.layers for t in (layer.keys, layer.values))


def _self_cache(hf, past, past_length: int, whole: bool):
    """A DynamicCache holding ``past``; sliding layers told how many tokens came before (their cache is trimmed)."""
    from transformers.cache_utils import DynamicCache, DynamicSlidingWindowLayer

    cache = DynamicCache(_pairs(past), config=None if whole else hf.config)
    for layer in cache.layers:
        if isinstance(layer, DynamicSlidingWindowLayer):
            layer.cumulative_length = past_length
    return cache


class EncoderReference(nn.Module):
    def __init__(self, hf, family: Architecture):
        super().__init__()
        self.hf, self.family = hf, family

    def forward(self, input_ids, attention_mask):
        extra = {}
        if self.family.position_ids is not None:  # RoBERTa: what transformers derives from pad tokens
            extra["position_ids"] = self.family.position_ids(self.hf.config, attention_mask)
        return (self.hf(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state,)


class DecoderReference(nn.Module):
    """``whole``: windowed layers keep every position (the --kv-buffer graphs)."""

    def __init__(self, hf, whole: bool = False):
        super().__init__()
        self.hf, self.whole = hf, whole

    def forward(self, input_ids, attention_mask, *past):
        new = input_ids.shape[1]
        past_length = attention_mask.shape[1] - new
        cache = _self_cache(self.hf, past, past_length, self.whole)
        out = self.hf(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=positions_from_mask(attention_mask, new), past_key_values=cache, use_cache=True,
                      cache_position=torch.arange(past_length, past_length + new))  # fmt: skip
        return (out.logits, *_flat(out.past_key_values))


class Seq2SeqEncoderReference(nn.Module):
    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, input_ids, attention_mask):
        hidden = self.hf.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        cross = [t for layer in self.hf.get_decoder().layers
                 for t in (layer.encoder_attn.k_proj(hidden), layer.encoder_attn.v_proj(hidden))]  # fmt: skip
        return (hidden, *cross)


class Seq2SeqDecoderReference(nn.Module):
    def __init__(self, hf):
        super().__init__()
        self.hf = hf
        self.layers = len(hf.get_decoder().layers)

    def forward(self, input_ids, attention_mask, encoder_attention_mask, *caches):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        batch, source = encoder_attention_mask.shape
        heads = self.hf.config.decoder_attention_heads
        cross = [t.view(batch, source, heads, -1).transpose(1, 2) for t in caches[: 2 * self.layers]]
        past = caches[2 * self.layers :]
        cache = EncoderDecoderCache(_self_cache(self.hf, past, 0, whole=True), DynamicCache(_pairs(cross)))
        # the cross keys/values are in the cache (marked filled): the encoder states are never read
        unread = torch.zeros(batch, source, self.hf.config.d_model)
        out = self.hf(attention_mask=encoder_attention_mask, decoder_input_ids=input_ids,
                      decoder_attention_mask=attention_mask, encoder_outputs=(unread,), past_key_values=cache,
                      use_cache=True)  # fmt: skip
        return (out.logits, *_flat(out.past_key_values.self_attention_cache))


def references(hf, family: Architecture, task: Task, whole_cache: bool) -> dict[str, nn.Module]:
    """The reference module of each graph fastattn exports for ``task`` (by graph name)."""
    if task is Task.FEATURE_EXTRACTION:
        return {"model": EncoderReference(hf, family)}
    if task is Task.TEXT_GENERATION:
        return {"model": DecoderReference(hf, whole_cache)}
    return {"encoder": Seq2SeqEncoderReference(hf), "decoder": Seq2SeqDecoderReference(hf)}
