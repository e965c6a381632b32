"""GPT-2, Llama (GQA), Mistral (sliding window) and Qwen2 (qkv biases, per-layer windows) end to end:
export, attention nodes, validation against transformers, and greedy tokens equal to transformers' generate."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import fastattn.runtime as rt
from fastattn.cli import main
from fastattn.errors import ValidationFailed
from fastattn.runtime import schema
from tests.hf import reference
from tests.hf.reference import PROMPTS

NEW = 64
# (kind, window) of each exported attention node
ATTENTION = {
    "gpt2": [("causal", 0)] * 2,
    "llama": [("causal", 0)] * 2,
    "mistral": [("sliding", 16)] * 2,
    "qwen2": [("causal", 0), ("sliding", 16)],  # max_window_layers 1: layer 0 full, layer 1 slides
}
HEADS = {"gpt2": (4, 4), "llama": (4, 2), "mistral": (4, 2), "qwen2": (4, 2)}


@pytest.mark.parametrize("name", list(ATTENTION))
def test_decoder_exports_and_generates_like_transformers(hf_checkpoint, hf_export, name):
    result = hf_export(name)
    manifest = result.manifest
    assert [(a.kind, a.window) for a in manifest.attention] == ATTENTION[name]
    assert {(a.num_heads, a.kv_num_heads) for a in manifest.attention} == {HEADS[name]}
    assert manifest.validation.passed and any(c.padded and c.decode_steps for c in manifest.validation.cases)
    assert manifest.hf.family == name and manifest.hf.task == "text-generation"
    assert manifest.hf.eos_token_ids == [2] and manifest.hf.pad_token_id == 1
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in result.output.iterdir()}

    want = reference.greedy(reference.causal_lm(hf_checkpoint(name)), PROMPTS, NEW, pad=1)
    model = rt.load(result.output)
    got = model.generate(PROMPTS, NEW, stop_ids=[])  # one left-padded batch
    assert got.tokens == want
    assert [len(t) for t in got.tokens] == [NEW] * len(PROMPTS)
    if name == "mistral":  # the cache of a windowed layer stays at W-1 = 15 positions
        assert len(PROMPTS[0]) + NEW > 4 * 16
        assert got.cache_bytes == 2 * 2 * len(PROMPTS) * 2 * 15 * 16 * 4


def test_generation_stops_at_eos_by_default(hf_checkpoint, hf_export):
    model = rt.load(hf_export("llama").output)
    hf = reference.causal_lm(hf_checkpoint("llama"))
    full = model.generate(PROMPTS, NEW, stop_ids=[]).tokens
    stopped = model.generate(PROMPTS, NEW)
    for row, tokens, finish in zip(full, stopped.tokens, stopped.finish):
        assert tokens == (row[: row.index(2)] if 2 in row else row)
        assert finish == ("stop" if 2 in row else "length")
    assert hf.generation_config.eos_token_id == 2


def test_kv_buffer_generates_like_transformers(hf_checkpoint, hf_export):
    """Mistral with GQA + rotary folded + one shared buffer per cache, past 4x its window."""
    result = hf_export("mistral", kv_buffer=True)
    assert result.manifest.fusions["model"]["gqa_rotary"] == 2
    assert {a.lowering for a in result.manifest.attention} == {"gqa"}
    want = reference.greedy(reference.causal_lm(hf_checkpoint("mistral")), PROMPTS[:1], NEW, pad=1)
    assert rt.load(result.output).generate(PROMPTS[:1], NEW, stop_ids=[]).tokens == want


def test_cli_generates_text_with_the_checkpoints_tokenizer(hf_export):
    out = hf_export("llama").output
    tokenizer = rt.load_tokenizer(out)
    assert isinstance(tokenizer, rt.HFTokenizer)
    prompt = "def fibonacci(n):"
    ids = tokenizer.encode(prompt)
    assert ids[0] == 0  # the checkpoint's post-processor adds <s>
    tokens = rt.load(out).generate(ids, 16).tokens[0]
    run = CliRunner().invoke(main, ["generate", str(out), "--prompt", prompt, "--max-new-tokens", "16"])
    assert run.exit_code == 0, run.output
    assert run.stdout == prompt + tokenizer.decode(tokens) + "\n"


def test_int4_on_real_text_passes_or_fails_with_its_figures(hf_checkpoint, tmp_path):
    """The gate runs on held-out stdlib text tokenized with the model's tokenizer; the export either passes
    or is rejected with the figures (a random 2x64 model moves a lot under int4 block 32)."""
    from fastattn.exporter.pipeline import ExportOptions, export
    from fastattn.quantize import Mode, QuantOptions
    from fastattn.quantize.step import QuantizeStep
    from fastattn.runtime.manifest import Manifest

    step = QuantizeStep(QuantOptions(Mode.INT4))
    out = tmp_path / "int4"
    try:
        manifest = export(hf_checkpoint("llama"), ExportOptions(out, repeats=3, threads=1, quantize=step)).manifest
    except ValidationFailed as e:
        assert "\n" not in str(e)
        manifest = Manifest.load(tmp_path / "int4.rejected")
        assert not out.exists()
    q = schema.dump(manifest.quantization)  # records as plain data
    assert q["data"].startswith("held-out stdlib text (16 windows of 128 tokens")
    assert set(q["figures"]) == {"float", "pytorch", "quantized"}
    assert q["figures"]["pytorch"]["agreement"] == pytest.approx(1.0)
    assert q["figures"]["quantized"]["perplexity"] > 1.0 and 0 < q["figures"]["quantized"]["agreement"] < 1


@pytest.mark.parametrize("name", ["llama", "mistral"])
def test_optimum_generates_the_runtime_tokens(hf_export, name):
    """ORTModelForCausalLM opens the export as it is and, feeding presents back as pasts (Mistral's trimmed to
    W-1 = 15 positions, 64 tokens past a 16-token window), generates fastattn.runtime's greedy tokens."""
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer, pipeline

    out = hf_export(name).output
    optimum = ORTModelForCausalLM.from_pretrained(out)
    assert optimum.can_use_cache and optimum.key_value_input_names[:2] == ["past_key_values.0.key",
                                                                          "past_key_values.0.value"]
    want = rt.load(out).generate(PROMPTS, NEW, stop_ids=[]).tokens  # one left-padded batch
    assert reference.greedy(optimum, PROMPTS, NEW, pad=1) == want
    assert len(set(want[0])) > 8  # not one token repeated: the comparison means something

    generator = pipeline("text-generation", model=optimum, tokenizer=AutoTokenizer.from_pretrained(out))
    prompt = "def fibonacci(n):"
    ids = rt.load_tokenizer(out).encode(prompt)
    got = generator(prompt, max_new_tokens=24, min_new_tokens=24, do_sample=False, return_tensors=True)
    assert got[0]["generated_token_ids"] == ids + rt.load(out).generate(ids, 24, stop_ids=[]).tokens[0]


def test_bench_optimum_decoder_rows_with_perplexity(hf_checkpoint, hf_export, tmp_path, monkeypatch):
    """Optimum's exports of a Llama as rows of fastattn bench: prefill and decode timed on the fastattn export's
    inputs, perplexity and top-1 agreement against PyTorch on held-out text (fp32: the same as PyTorch's)."""
    from fastattn.bench.plan import Plan, Settings
    from fastattn.bench.run import bench

    monkeypatch.setenv("FASTATTN_CACHE", str(tmp_path / "cache"))
    checkpoint, out = hf_checkpoint("llama"), hf_export("llama").output
    settings = Settings(threads=1, warmup=1, repeats=3, min_time=0.0, decode_steps=2, isolate=False)
    result = bench(Plan.create([out], sequences=[16], optimum=[checkpoint], optimum_variants=["fp32", "int8"],
                               settings=settings))  # fmt: skip
    assert not result.failures
    rows = {r.export: r for r in result.rows}
    assert set(rows) == {out.name, "optimum-fp32", "optimum-int8", checkpoint.name}
    for row in rows.values():
        assert row.prefill_ms > 0 and 0 < row.decode_tokens_per_s < float("inf")
    acc = {(a.export, a.pytorch): a for a in result.accuracy}
    reference = acc[(checkpoint.name, True)].perplexity
    for exact in (out.name, "optimum-fp32"):
        assert acc[(exact, False)].agreement > 0.999 and abs(acc[(exact, False)].perplexity / reference - 1) < 1e-4
    assert acc[("optimum-int8", False)].agreement < 1.0 and acc[("optimum-int8", False)].perplexity > 0
