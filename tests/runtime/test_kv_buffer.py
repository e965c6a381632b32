"""The --kv-buffer decode path: unguarded GQA with rotary inside, one buffer per cache shared by past and present."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

import fastattn.runtime as rt
from fastattn.cli import main
from fastattn.errors import InputError
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.models import LayerAttention, ModelConfig, build, save
from tests.conftest import TINY_SEQ2SEQ
from tests.runtime.test_generate import torch_greedy

ROOT = Path(__file__).parents[2]
# head size 16: GQA's rotary kernel takes multiples of 16; a window of 16 the generation runs far past
CONFIG = ModelConfig(
    name="kv-buffer", vocab_size=64, d_model=64, num_heads=4, kv_heads=2, ffn_dim=64, tie_embeddings=False,
    decoder_layers=(LayerAttention.parse("sliding:16"), LayerAttention()), max_positions=512,
)  # fmt: skip
PROMPT = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 2, 38, 4, 6, 26, 43, 3, 8]


@pytest.fixture(scope="module")
def buffered(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("kvb")
    ckpt = save(build(CONFIG, seed=2), root / "model.pt")
    return ckpt, export(ckpt, ExportOptions(root / "out", kv_buffer=True)).output


def test_graph_is_gqa_with_rotary_inside_and_validated_on_unpadded_rows(buffered):
    _, out = buffered
    model = rt.load(out)
    manifest = model.manifest
    assert manifest.kv_buffer.max_length == 512 and manifest.kv_buffer.rows == "unpadded"
    assert [a.lowering for a in manifest.attention] == ["gqa", "gqa"]
    assert manifest.fusions["model"]["gqa_rotary"] == 2
    nodes = onnx.load(out / "model.onnx").graph.node
    gqa = [n for n in nodes if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == 2 and not any(n.op_type in ("If", "RotaryEmbedding") for n in nodes)
    assert all(onnx.helper.get_attribute_value(next(a for a in n.attribute if a.name == "do_rotary")) == 1 for n in gqa)
    cases = [c.case for c in manifest.validation.cases]
    assert manifest.validation.passed and cases and not any("padded" in c for c in cases)
    assert "past_sequence" in manifest.graphs[0].inputs[2].shape  # windowed caches stay whole (the buffer)
    assert "decode path: **--kv-buffer**" in (out / "report.md").read_text()


def test_greedy_parity_with_pytorch_past_the_window(buffered):
    ckpt, out = buffered
    got = rt.load(out).generate(PROMPT, 128)
    assert got.tokens[0] == torch_greedy(ckpt, PROMPT, 128)
    assert len(set(got.tokens[0])) > 5
    # one buffer per cache of prompt + new positions: 4 caches x (1, 2 heads, 148, 16) floats
    assert got.cache_bytes == 4 * 2 * 148 * 16 * 4


def test_rows_of_one_length_match_each_row_alone(buffered):
    model = rt.load(buffered[1])
    prompts = [PROMPT, PROMPT[::-1], [t % 7 for t in PROMPT]]
    batch = model.generate(prompts, 40)
    assert batch.tokens == [model.generate(p, 40).tokens[0] for p in prompts]


def test_prompts_of_different_lengths_are_right_padded_and_match_each_alone(buffered):
    """The runtime right-pads for the shared buffer: each row's keys go to its own length."""
    ckpt, out = buffered
    model = rt.load(out)
    prompts = [PROMPT, PROMPT[:7], PROMPT[5:17]]
    batch = model.generate(prompts, 48)
    assert batch.tokens == [model.generate(p, 48).tokens[0] for p in prompts]
    assert batch.tokens[1] == torch_greedy(ckpt, PROMPT[:7], 48)


def test_padded_masks_in_run_and_too_long_sequences_are_refused(buffered):
    model = rt.load(buffered[1])
    with pytest.raises(InputError, match="longer than this export's 512 positions"):
        model.generate(PROMPT, 500)
    feeds = model.sample(sizes={"batch": 2, "sequence": 6, "past_sequence": 0})
    feeds["attention_mask"][1, :2] = 0
    with pytest.raises(InputError, match=r"'attention_mask' has padding, but this export \(--kv-buffer\)"):
        model.run(feeds)


def test_app_that_knows_nothing_of_fastattn_runs_it_unshared(buffered):
    """The same graph runs with growing presents (no shared buffer): the example app's tokens agree."""
    _, out = buffered
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "generate_onnxruntime.py"), str(out),
                          ",".join(map(str, PROMPT)), "48"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert [int(t) for t in run.stdout.split()] == rt.load(out).generate(PROMPT, 48).tokens[0]


def test_kv_buffer_needs_a_decoder_on_cpu(tmp_path, buffered):
    ckpt = save(build(TINY_SEQ2SEQ), tmp_path / "seq2seq.pt")
    run = CliRunner().invoke(main, ["export", str(ckpt), "-o", str(tmp_path / "a"), "--kv-buffer"])
    assert run.exit_code == 2 and "--kv-buffer is for decoder-only models" in run.output
    run = CliRunner().invoke(main, ["export", str(buffered[0]), "-o", str(tmp_path / "b"), "--kv-buffer", "-t", "portable"])
    assert run.exit_code == 2 and "--kv-buffer is a CPU path" in run.output
