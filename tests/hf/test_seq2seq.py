"""BART and Marian end to end: two graphs, self- and cross-attention nodes, and greedy generation equal to
transformers' generate (decoder started from decoder_start_token_id, prompts of different lengths in one batch)."""

from __future__ import annotations

import pytest

import fastattn.runtime as rt
from tests.hf import reference
from tests.hf.reference import PROMPTS

NEW = 64


@pytest.mark.parametrize("name", ["bart", "marian"])
def test_seq2seq_generates_like_transformers(hf_checkpoint, hf_export, name):
    result = hf_export(name)
    manifest = result.manifest
    assert [g.name for g in manifest.graphs] == ["encoder", "decoder"]
    kinds = [(a.graph, a.kind) for a in manifest.attention]
    assert kinds == [("encoder", "full")] * 2 + [("decoder", "causal"), ("decoder", "full")] * 2  # self, cross
    assert manifest.validation.passed and manifest.hf.task == "text2text-generation"
    hf = reference.seq2seq_lm(hf_checkpoint(name))
    assert manifest.hf.decoder_start_token_id == hf.config.decoder_start_token_id
    want = reference.greedy(hf, PROMPTS, NEW, pad=1, seq2seq=True)
    got = rt.load(result.output).generate(PROMPTS, NEW, stop_ids=[])
    assert got.tokens == want and [len(t) for t in got.tokens] == [NEW] * 3
