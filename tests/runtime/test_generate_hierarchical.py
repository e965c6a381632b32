"""Hierarchical decoders through the torch-free runtime: summarized caches, token parity with PyTorch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import fastattn.runtime as rt
from fastattn.errors import InputError
from fastattn.models import ModelConfig
from fastattn.models.config import parse_patterns
from tests.runtime.test_generate import ROOT, _export, torch_greedy

# blocks of 8 and 5: 20 + 256 tokens cross 34 and 55 block borders
HIER = ModelConfig(
    name="hier", vocab_size=64, d_model=32, num_heads=4, kv_heads=2, ffn_dim=64, tie_embeddings=False,
    decoder_layers=parse_patterns("hierarchical:8,sliding:8,hierarchical:5"),
)  # fmt: skip
PROMPT = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 2, 38, 4, 6, 26, 43, 3, 8]


@pytest.fixture(scope="module")
def hier(tmp_path_factory):
    return _export(HIER, tmp_path_factory.mktemp("gen"), seed=4)


def test_greedy_parity_for_256_tokens(hier):
    """The export keeps summaries of complete blocks; the PyTorch reference keeps every key."""
    ckpt, out = hier
    got = rt.load(out).generate(PROMPT, 256).tokens[0]
    assert got == torch_greedy(ckpt, PROMPT, 256)
    assert len(set(got)) > 5


def test_cache_grows_as_blocks(hier):
    model = rt.load(hier[1])
    entry = model.manifest.graphs[0]
    assert [s.shape[2] for s in entry.inputs if s.name.startswith("past_key")] == [
        "summarized(past_sequence,8)", "min(past_sequence,7)", "summarized(past_sequence,5)"]
    kv = 2 * 2 * 8 * 4  # key + value, 2 kv heads x 8 floats
    for new in (40, 200):
        n = len(PROMPT) + new - 1  # the last token is not fed back
        want = kv * (n // 8 + n % 8 + 7 + n // 5 + n % 5)
        assert model.generate(PROMPT, new).cache_bytes == want


def test_batch_of_different_lengths_runs_and_first_row_matches_alone(hier):
    """Rows are left-padded, so a padded row's blocks shift against its tokens (slot-aligned blocks);
    the longest row has no padding and must equal its own run."""
    model = rt.load(hier[1])
    prompts = [PROMPT, PROMPT[:7], PROMPT[:13]]
    batch = model.generate(prompts, 30)
    assert batch.tokens[0] == model.generate(PROMPT, 30).tokens[0]
    assert all(len(t) == 30 for t in batch.tokens)


def test_a_cache_of_the_wrong_length_is_refused(hier):
    model = rt.load(hier[1])
    graph = model.graph()
    names = [s.name for s in graph.entry.inputs]
    feeds = {"input_ids": np.ones((1, 1), np.int64), "attention_mask": np.ones((1, 21), np.int64)}
    for spec in graph.entry.inputs:
        if spec.name.startswith("past"):
            feeds[spec.name] = np.zeros((1, 2, 20, 8), np.float32)  # whole, not summarized
    assert set(feeds) == set(names)
    with pytest.raises(InputError, match=r"summarized\(past_sequence,8\) is 20//8 \+ 20%8 = 6"):
        model.run(feeds)


def test_standalone_app_feeds_summarized_caches_back(hier):
    """examples/generate_onnxruntime.py (onnxruntime + numpy, reads fastattn.json) gets the runtime's tokens."""
    out = hier[1]
    run = subprocess.run([sys.executable, "-I", str(ROOT / "examples" / "generate_onnxruntime.py"), str(out),
                          ",".join(map(str, PROMPT)), "64"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert [int(t) for t in run.stdout.split()] == rt.load(out).generate(PROMPT, 64).tokens[0]
