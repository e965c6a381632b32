"""PyTorch first: each family's mapped fastattn model against the transformers model (eager attention) on the
same inputs, left-padded batches and sequences past every sliding window included; and the declarative registry."""

from __future__ import annotations

import pytest
import torch

from fastattn.families.hf import architectures
from fastattn.families.hf.checkpoint import read_checkpoint
from fastattn.families.hf.convert import convert
from fastattn.families.hf.reference import positions_from_mask
from fastattn.families.hf.spec import Task
from tests.hf import reference
from tests.hf.checkpoints import BUILDERS, VOCAB

FAMILIES = [f.name for f in architectures.REGISTRY]
TOLERANCE = 2e-5  # float32, hidden states / logits of magnitude ~3-7


def test_every_registered_family_has_a_tiny_checkpoint():
    assert set(BUILDERS) == set(FAMILIES)


def _batch(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows: full, left-padded by 7, left-padded by half."""
    ids = torch.randint(3, VOCAB, (3, length), generator=torch.Generator().manual_seed(length))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    mask[2, : length // 2] = 0
    return ids, mask


@pytest.mark.parametrize("name", FAMILIES)
def test_mapped_model_matches_transformers(hf_checkpoint, name):
    directory = hf_checkpoint(name)
    converted = convert(read_checkpoint(directory))
    model = converted.model
    for length in (9, 80):  # 80 > 4 x the sliding window (16) of mistral and qwen2
        ids, mask = _batch(length)
        with torch.no_grad():
            if converted.task is Task.FEATURE_EXTRACTION:
                extra = {"position_ids": converted.family.position_ids(converted.hf_config, mask)} if converted.family.position_ids else {}
                want = reference.encoder(directory)(input_ids=ids, attention_mask=mask, **extra).last_hidden_state
                got, valid = model(ids, mask)[0], mask.bool()
            elif converted.task is Task.TEXT_GENERATION:
                want = reference.causal_lm(directory)(input_ids=ids, attention_mask=mask,
                                                      position_ids=positions_from_mask(mask, length)).logits  # fmt: skip
                got, valid = model(ids, mask)[0], mask.bool()
            else:
                dec = torch.randint(3, VOCAB, (3, length // 2 + 1), generator=torch.Generator().manual_seed(1))
                want = reference.seq2seq_lm(directory)(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
                got, valid = model(ids, dec, mask), torch.ones(dec.shape, dtype=torch.bool)
        error = (got - want)[valid].abs().max().item()
        assert error < TOLERANCE, f"{name} S={length}: max abs {error:.2e}"
        assert want[valid].abs().max().item() > 1.0  # a real comparison, not of zeros


def test_declared_configs():
    """What the specs say about each family's attention and layers, checked on the tiny checkpoints' configs."""
    from transformers import Qwen2Config

    qwen = architectures.QWEN2.model_config(Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                                   num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
                                                   sliding_window=16, max_window_layers=2))  # fmt: skip
    assert [str(layer) for layer in qwen.decoder_layers] == ["full", "full", "sliding:16"]
    assert qwen.biases == (True, False, False)
    assert qwen.kv_heads == 2


def test_every_family_is_exported_and_generated_by_a_test():
    from tests.hf.test_decoders import ATTENTION
    from tests.hf.test_encoders import ENCODERS

    seq2seq = {f.name for f in architectures.REGISTRY if f.arch.value == "encoder_decoder"}
    assert seq2seq == {"bart", "marian"}  # test_seq2seq's parameters
    assert set(ATTENTION) | set(ENCODERS) | seq2seq == set(FAMILIES)
