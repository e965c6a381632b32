"""Generation with the torch-free runtime: token parity with a PyTorch loop, batching, sampling, CLI, apps."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import fastattn.runtime as rt
from fastattn.cli import main
from fastattn.errors import InputError
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.models import LayerAttention, ModelConfig, build, load, save
from fastattn.models.config import Positions
from fastattn.runtime.generate import choose
from tests.conftest import TINY_SEQ2SEQ

ROOT = Path(__file__).parents[2]
PROMPT = b"def main(args):\n    return"  # 26 bytes: prompt + 128 new tokens run far past the 16-token window

# Untied heads: random tied embeddings make greedy repeat the last token, a weak parity check.
FULL_GQA = ModelConfig(
    name="full-gqa", vocab_size=64, d_model=32, num_heads=4, kv_heads=2, ffn_dim=64, tie_embeddings=False,
    decoder_layers=(LayerAttention(), LayerAttention()),
)  # fmt: skip
SLIDING_LEARNED = ModelConfig(
    name="sliding-learned", vocab_size=64, d_model=32, num_heads=4, kv_heads=4, ffn_dim=64, tie_embeddings=False,
    positions=Positions.LEARNED, max_positions=160,
    decoder_layers=(LayerAttention.parse("sliding:16"), LayerAttention()),
)  # fmt: skip
ALL_WINDOWED = ModelConfig(
    name="all-windowed", vocab_size=64, d_model=32, num_heads=4, kv_heads=2, ffn_dim=64, tie_embeddings=False,
    decoder_layers=(LayerAttention.parse("sliding:8"), LayerAttention.parse("global_local:2:12")),
)  # fmt: skip
SEQ2SEQ = replace(TINY_SEQ2SEQ, name="seq2seq-untied", tie_embeddings=False)


def _export(config: ModelConfig, root: Path, seed: int = 1) -> tuple[Path, Path]:
    ckpt = save(build(config, seed=seed), root / f"{config.name}.pt")
    return ckpt, export(ckpt, ExportOptions(root / config.name)).output


@pytest.fixture(scope="module")
def lm(trained_lm, tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, export directory) of the trained byte-level LM (sliding:16 + full GQA layers)."""
    return trained_lm, export(trained_lm, ExportOptions(tmp_path_factory.mktemp("gen") / "lm")).output


@pytest.fixture(scope="module")
def full_gqa(tmp_path_factory):
    return _export(FULL_GQA, tmp_path_factory.mktemp("gen"), seed=2)


@pytest.fixture(scope="module")
def all_windowed(tmp_path_factory):
    return _export(ALL_WINDOWED, tmp_path_factory.mktemp("gen"), seed=7)


@pytest.fixture(scope="module")
def seq2seq(tmp_path_factory):
    return _export(SEQ2SEQ, tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def sliding_learned(tmp_path_factory):
    return _export(SLIDING_LEARNED, tmp_path_factory.mktemp("gen"))


@torch.no_grad()
def torch_greedy(ckpt: Path, prompt: list[int], new: int) -> list[int]:
    """The reference: a PyTorch greedy loop with the model's own KV cache, kept whole (never trimmed)."""
    model = load(ckpt).eval().keep_whole_caches()
    ids = torch.tensor([prompt])
    mask, out = torch.ones_like(ids), []
    if model.config.arch.value == "encoder_decoder":
        cross = model.cross_kv(model.encode(ids, mask))
        enc_mask, ids, mask = mask, ids[:, -1:], torch.ones(1, 1, dtype=torch.long)
        step = lambda ids, mask, past: model.decode(ids, cross, enc_mask, mask, past)  # noqa: E731
    else:
        step = model
    past = None
    for _ in range(new):
        logits, past = step(ids, mask, past)
        out.append(int(logits[0, -1].argmax()))
        ids = torch.tensor([[out[-1]]])
        mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], 1)
    return out


def test_greedy_parity_trained_lm_past_the_window(lm):
    ckpt, out = lm
    got = rt.load(out).generate(list(PROMPT), max_new_tokens=128)
    assert got.finish == ["length"] and got.steps == 128
    assert got.tokens[0] == torch_greedy(ckpt, list(PROMPT), 128)
    # 60 training steps teach this model mostly spaces: its argmax has no near-ties, unlike random weights


@pytest.mark.parametrize("name", ["full_gqa", "sliding_learned", "all_windowed"])
def test_greedy_parity_random_decoders(name, request):
    """The export trims windowed caches; the PyTorch reference keeps them whole."""
    ckpt, out = request.getfixturevalue(name)
    prompt = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 2, 38, 4, 6, 26, 43, 3, 8]  # 20 + 128 > window 16
    new = 140 if name == "sliding_learned" else 128
    got = rt.load(out).generate(prompt, new).tokens[0]
    assert got == torch_greedy(ckpt, prompt, new)
    assert len(set(got)) > 5  # varied tokens, not one repeated


def test_windowed_caches_stop_growing(all_windowed, sliding_learned):
    """Past the windows the cache of an all-windowed model has a fixed size; a full layer's grows."""
    prompt = [3, 14, 15, 9, 26]
    windowed = rt.load(all_windowed[1])
    assert windowed.generate(prompt, 40).cache_bytes == windowed.generate(prompt, 120).cache_bytes
    kv = 2 * 2 * 8 * 4  # key + value, 2 kv heads x 8 floats
    assert windowed.generate(prompt, 120).cache_bytes == kv * (7 + 13)  # sliding:8 keeps 7, global_local:2:12 13
    mixed = rt.load(sliding_learned[1])  # sliding:16 + full, 4 kv heads x 8
    grown = mixed.generate(prompt, 120).cache_bytes - mixed.generate(prompt, 40).cache_bytes
    assert grown == 2 * 4 * 8 * 4 * 80  # only the full layer grew, by 80 positions
    # ORT's per-shape memory patterns would grow a bounded-cache decoder's memory every step:
    # the manifest says to turn them off (apps read it), and the runtime does
    assert windowed.manifest.session.memory_pattern_off == ["model"]
    assert mixed.manifest.session.memory_pattern_off == []
    assert windowed.graph().session.get_session_options().enable_mem_pattern is False
    assert mixed.graph().session.get_session_options().enable_mem_pattern is True


def test_greedy_parity_encoder_decoder(seq2seq):
    ckpt, out = seq2seq
    prompt = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 2, 38, 4, 6, 26, 43, 3, 8]
    got = rt.load(out).generate(prompt, 128).tokens[0]
    assert got == torch_greedy(ckpt, prompt, 128)
    assert len(set(got)) > 5


@pytest.mark.parametrize("name", ["lm", "sliding_learned", "seq2seq"])
def test_batch_of_different_lengths_matches_each_row_alone(name, request):
    model = rt.load(request.getfixturevalue(name)[1])
    prompts = [list(b"import os\n"), list(b"x = 1"), list(b"for i in range(10):\n    ")]
    if name != "lm":
        prompts = [[t % 64 for t in p] for p in prompts]
    batch = model.generate(prompts, 40)
    for prompt, tokens in zip(prompts, batch.tokens, strict=True):
        assert tokens == model.generate(prompt, 40).tokens[0]
    if name != "lm":  # the trained LM answers spaces to everything; random models give varied rows
        assert len({tuple(t) for t in batch.tokens}) == 3


def test_sampling_seeded_top_k_and_top_p(lm):
    model = rt.load(lm[1])
    prompt = list(PROMPT)
    sample = lambda **kw: model.generate(prompt, 48, rt.Sampling(**kw)).tokens[0]  # noqa: E731
    a, b = sample(temperature=1.0, seed=0), sample(temperature=1.0, seed=0)
    assert a == b
    assert a != sample(temperature=1.0, seed=1)
    greedy = model.generate(prompt, 48).tokens[0]
    assert sample(temperature=1.0, top_k=1, seed=3) == greedy
    assert sample(temperature=0.7, top_p=1e-6, seed=4) == greedy  # the top token alone reaches any tiny p
    nucleus = sample(temperature=1.0, top_p=0.9, seed=0)
    assert nucleus == sample(temperature=1.0, top_p=0.9, seed=0) and len(nucleus) == 48
    with pytest.raises(InputError, match="temperature 0 is greedy"):
        rt.Sampling(top_k=5)


def test_choose_respects_top_k_and_top_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 4000))
    rng = np.random.default_rng(0)
    counts = lambda s: np.bincount(choose(logits, s, rng), minlength=4) / 4000  # noqa: E731
    assert counts(rt.Sampling(1.0, top_k=2))[2:].sum() == 0
    np.testing.assert_allclose(counts(rt.Sampling(1.0, top_k=2))[:2], [0.625, 0.375], atol=0.03)
    assert counts(rt.Sampling(1.0, top_p=0.75))[2:].sum() == 0  # 0.5 + 0.3 reaches 0.75
    np.testing.assert_allclose(counts(rt.Sampling(1.0)), [0.5, 0.3, 0.15, 0.05], atol=0.03)


def test_stop_token_ends_a_row_and_streaming_sees_every_step(lm):
    model = rt.load(lm[1])
    prompts = [list(PROMPT), list(b"import")]
    sampling = rt.Sampling(1.0, seed=0)  # varied tokens (greedy gives spaces); one draw per row and step
    free = model.generate(prompts, 30, sampling).tokens
    stop = free[0][5]  # row 0 stops at its 6th token or earlier, where row 1 may not
    seen: list[tuple[int, list]] = []
    result = model.generate(prompts, 30, sampling, [stop], on_step=lambda i, new: seen.append((i, new)))
    cut = free[0].index(stop)
    assert result.tokens[0] == free[0][:cut] and result.finish[0] == "stop"
    if stop in free[1]:
        assert result.tokens[1] == free[1][: free[1].index(stop)]
    else:
        assert result.tokens[1] == free[1] and result.finish[1] == "length"
    assert [i for i, _ in seen] == list(range(result.steps))
    for row in range(2):
        assert [new[row] for _, new in seen if new[row] is not None] == result.tokens[row]


def test_position_limit_and_bad_input(sliding_learned, lm):
    model = rt.load(sliding_learned[1])
    with pytest.raises(InputError, match=r"prompt of 20 tokens \+ 141 new tokens is longer than the model's 160"):
        model.generate([1] * 20, 141)
    with pytest.raises(InputError, match=r"outside the vocabulary \[0, 64\)"):
        model.generate([1, 64], 4)
    with pytest.raises(InputError, match="max_new_tokens must be a positive integer"):
        model.generate([1, 2], 0)


def test_tokenizer_round_trip(lm, tmp_path):
    tok = rt.load_tokenizer(lm[1])
    assert tok.decode(tok.encode("héllo ✓")) == "héllo ✓"
    assert rt.load_tokenizer(tmp_path) is None


def test_cli_streams_text_and_ids(lm):
    ckpt, out = lm
    want = torch_greedy(ckpt, list(PROMPT), 24)
    run = CliRunner().invoke(main, ["generate", str(out), "--prompt", PROMPT.decode(), "--max-new-tokens", "24"])
    assert run.exit_code == 0, run.output
    assert run.stdout.startswith(PROMPT.decode() + bytes(want).decode("utf-8", "replace"))
    run = CliRunner().invoke(main, ["generate", str(out), "--prompt-ids", "100,101,102", "--max-new-tokens", "5",
                                    "--temperature", "0.8", "--top-p", "0.9", "--seed", "0"])  # fmt: skip
    assert run.exit_code == 0, run.output
    ids = [int(t) for t in run.stdout.split()]
    assert ids == rt.load(out).generate([100, 101, 102], 5, rt.Sampling(0.8, top_p=0.9, seed=0)).tokens[0]


def test_cli_batch_of_prompts_prints_a_line_each(full_gqa):
    _, out = full_gqa
    prompts = [[3, 14, 15], [9, 26, 5, 35, 8]]
    run = CliRunner().invoke(main, ["generate", str(out), "--max-new-tokens", "12",
                                    *(a for p in prompts for a in ("--prompt-ids", ",".join(map(str, p))))])  # fmt: skip
    assert run.exit_code == 0, run.output
    assert [[int(t) for t in line.split()] for line in run.stdout.splitlines()] == rt.load(out).generate(
        prompts, 12
    ).tokens
    run = CliRunner().invoke(main, ["generate", str(out), "--prompt-ids", "1,2", "--prompt-ids", ","])
    assert run.exit_code != 0 and "a --prompt-ids is empty" in run.output


def test_cli_errors(full_gqa, tmp_path):
    cases = [
        (["generate", str(full_gqa[1]), "--prompt", "hi"], "has no tokenizer.json", 2),
        (["generate", str(tmp_path), "--prompt-ids", "1,2"], "has no fastattn.json", 2),
        (["generate", str(full_gqa[1]), "--prompt-ids", "1,2", "-p", "nosuch"], "nosuch", 1),
        (["generate", str(full_gqa[1]), "--prompt-ids", "1,x"], "--prompt-ids", 2),
        (["generate", str(full_gqa[1])], "--prompt or --prompt-ids", 2),
    ]
    for args, message, code in cases:
        run = CliRunner().invoke(main, args)
        assert run.exit_code == code, (args, run.output)
        assert message in run.output and "Traceback" not in run.output
        assert len(run.output.strip().splitlines()) == 1, run.output


def test_standalone_app_matches_the_runtime(full_gqa, seq2seq):
    """examples/generate_onnxruntime.py uses only onnxruntime and numpy, reading fastattn.json."""
    for out, prompt in [(full_gqa[1], [3, 14, 15, 9, 26]), (seq2seq[1], [7, 1, 12, 40, 33])]:
        run = subprocess.run(
            [sys.executable, "-I", str(ROOT / "examples" / "generate_onnxruntime.py"), str(out),
             ",".join(map(str, prompt)), "64", "--report-modules"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout.strip().splitlines()[-1])
        assert report["imported"] == []  # nothing of fastattn, torch or onnx
        assert report["tokens"] == rt.load(out).generate(prompt, 64).tokens[0]


def test_runtime_generation_imports_no_torch_or_click():
    code = ("import sys, fastattn.runtime.generate, fastattn.runtime.tokenizer; "
            "heavy = [m for m in ('torch', 'onnx', 'click', 'rich', 'fastattn.train') if m in sys.modules]; "
            "assert not heavy, heavy")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
