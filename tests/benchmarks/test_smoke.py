"""Every benchmark script runs end to end: its ``--smoke`` mode (the same code path at tiny sizes)
in a subprocess, exactly as ``python -m benchmarks.<name> --smoke --out DIR`` from the repository
root, and the results it writes hold the rows a real run records, with finite positive figures.

Timing figures are only checked to be measurements (finite, positive): no test depends on how
fast anything ran. What a smoke run computes exactly (errors against PyTorch, token equality,
cache sizes) is asserted. The GenAI comparison needs ``.venv-genai`` (``make genai-env``, not part
of ``make test``) and is skipped without it; everything else uses what ``make test`` builds
(.venv, .venv-openvino, .venv-web).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
GENAI_PY = ROOT / ".venv-genai" / "bin" / "python"


def smoke(module: str, out: Path, *flags: str) -> dict:
    """Run ``benchmarks.<module> --smoke --out out``; its JSON results, after checking its markdown names
    the command and that nothing in benchmarks/results changed."""
    recorded = {p.name: p.stat().st_mtime_ns for p in RESULTS.iterdir()}
    run = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--smoke", "--out", str(out), *flags],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, f"benchmarks.{module} --smoke failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    assert {p.name: p.stat().st_mtime_ns for p in RESULTS.iterdir()} == recorded
    record = json.loads((out / f"{module}.json").read_text())
    text = (out / f"{module}.md").read_text()
    assert text.startswith("# ") and f"python -m benchmarks.{module} --smoke" in text, text[:500]
    return record


def measured(*values: object) -> None:
    """Each value is a measurement: a finite number above zero."""
    for value in values:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), value
        assert math.isfinite(value) and value > 0, value


def bench_rows(record: dict) -> list[dict]:
    """The rows of a ``fastattn bench`` record, each with finite positive samples in every phase."""
    assert record["schema"] == "fastattn-bench/1" and not record["failures"], record["failures"]
    for row in record["rows"]:
        assert row["phases"], row
        for phase in row["phases"]:
            assert phase["samples_ms"], phase
            measured(*phase["samples_ms"])
    return record["rows"]


def test_reference_kernels(tmp_path):
    r = smoke("reference_kernels", tmp_path)
    assert [row["sequence"] for row in r["rows"]] == [64, 128]
    for row in r["rows"]:
        measured(row["sliding_ms"], row["full_causal_ms"], row["full_over_sliding"])


def test_encoder_vs_eager(tmp_path):
    r = smoke("encoder_vs_eager", tmp_path)
    assert [row["sequence"] for row in r["rows"]] == [16, 32] and r["attention_kernels"]
    for row in r["rows"]:
        measured(row["pytorch_eager"], row["onnx_portable"], row["onnx_cpu_optimized"], row["speedup_vs_eager"])
        assert row["max_abs_error"] < 1e-4  # the optimized export computes what PyTorch computes


def test_lowering(tmp_path):
    r = smoke("lowering", tmp_path)
    for row in r["sliding_layer"]:
        measured(row["blocked-local"], row["gqa"], row["gqa_over_blocked"])
        assert row["max_abs_difference"] < 1e-4  # both lowerings of one sliding-window node agree
    assert [row["sequence"] for row in r["sliding"]["rows"]] == [64, 128]
    for row in r["sliding"]["rows"]:
        measured(row["blocked-local"], row["gqa"])
    cases = r["causal"]["cases"]
    assert set(cases) == {"prefill", "decode"}
    for case in cases.values():
        assert {"portable", "gqa", "mha", "onnx-attention"} < set(case) and any(k.startswith("chosen (") for k in case)
        measured(*case.values())


def test_scaling(tmp_path):
    rows = bench_rows(smoke("scaling", tmp_path))
    exports = {f"{name}-{target}" for name in ("sliding", "hierarchical64") for target in ("cpu", "openvino")}
    assert {(row["export"], row["sequence"]) for row in rows} == {(e, s) for e in exports for s in (32, 64)}
    assert {row["provider"] for row in rows if row["export"].endswith("-openvino")} == {"openvino"}
    assert all({p["name"] for p in row["phases"]} == {"prefill", "decode"} for row in rows)
    assert (tmp_path / "scaling.png").stat().st_size > 0
    text = (tmp_path / "scaling.md").read_text()  # the log-log slope table
    assert "| sliding-cpu | sliding:16 |" in text and "| hierarchical64-openvino | hierarchical:8 |" in text


def test_providers_openvino_int8(tmp_path):
    """The recorded command's path on OpenVINO EP (.venv-openvino): fp32 and int8 exports (int8-static, its
    format) beside PyTorch eager. The CPU EP's rows take the same path (and scaling's and web's smoke runs
    bench the CPU EP); leaving them out saves two exports."""
    record = smoke("providers", tmp_path, "--int8", "-p", "openvino")
    rows = bench_rows(record)
    got = {(row["export"], row["provider"], row["precision"]) for row in rows}
    assert got == {("default-fp32-openvino", "openvino", "fp32"), ("default-int8-openvino", "openvino", "int8"),
                   ("default.pt", "pytorch", "fp32")}  # fmt: skip
    assert "openvino" in record["environments"] and not record["unavailable"]
    assert all(p["provider"] == "openvino" for p in record["placements"])
    text = (tmp_path / "providers.md").read_text()
    assert "make openvino-env && python -m benchmarks.providers --smoke --int8 -p openvino" in text


def test_decode_memory(tmp_path):
    r = smoke("decode_memory", tmp_path)
    rows = {(row["attention"], int(row["new_tokens"])): row for row in r["rows"]}
    assert set(rows) == {(a, n) for a in ("full", "sliding") for n in (16, 48)}
    for row in rows.values():
        measured(row["cache_bytes"], row["tokens_per_s"], row["prefill_ms"], row["first_steps_ms"], row["last_steps_ms"])
        assert math.isfinite(row["peak_rise_mb"]) and row["peak_rise_mb"] >= 0
    # what the benchmark shows: a sliding window's cache stops growing, a full one's does not
    assert rows["sliding", 48]["cache_bytes"] == rows["sliding", 16]["cache_bytes"]
    assert rows["full", 48]["cache_bytes"] > rows["full", 16]["cache_bytes"]


def test_quantization(tmp_path):
    r = smoke("quantization", tmp_path)
    measured(*(row["gops"] for row in r["gemm"]))
    enc, dec = r["encoder"], r["decoder"]
    assert set(enc["models"]) == {"fp32", "int8", "int8-static"} and set(dec["models"]) == {"fp32", "int8", "int4"}
    for name, f in {**enc["models"], **dec["models"]}.items():
        measured(f["size_mb"])
        assert name == "fp32" or f["gate"] == "passed"
    for name in ("int8", "int4"):
        measured(dec["models"][name]["quantized_perplexity"], dec["models"][name]["float_perplexity"])
    for row in enc["rows"]:
        measured(*(v for k, v in row.items() if k.endswith(("_ms", "_vs_eager", "gops", "gops_alone"))))
    for phase in ("prefill", "decode"):
        assert set(dec["ms"][phase]) == {"pytorch_eager", "fp32", "int8", "int4"}
        measured(*dec["ms"][phase].values())


def test_quantized_validation(tmp_path):
    """Correct int4 / int8 exports of tiny HF checkpoints beside their broken copies: today's bounds pass the
    correct ones and reject every broken one, each break moving the outputs further than quantization did."""
    r = smoke("quantized_validation", tmp_path)
    records = {(x["model"], x["mode"]): x for x in r["records"]}
    assert set(records) == {("tiny-llama", "int4"), ("tiny-bert", "int8")}
    for record in records.values():
        assert record["gate_passed"] and record["summary"]["finite"] and record["verdicts"]["new_rule"]
        assert set(record["broken"]) == {"zero-first", "zero-last", "mask-ignored"}
        for variant in record["broken"].values():
            assert variant["summary"]["row_cosine"] < record["summary"]["row_cosine"]
            assert not variant["verdicts"]["new_rule"]
    assert set(r["bounds"]) == {"int8", "int4"} and all(b["basis"] for b in r["bounds"].values())
    assert r["separation"]["int8"]["row_cosine"]["worst_correct"] > r["separation"]["int8"]["row_cosine"]["best_broken"]


def test_trained_decode(tmp_path):
    r = smoke("trained_decode", tmp_path)
    names = [row["export"] for row in r["rows"]]
    assert names == [f"{path} {mode}" for path in ("default", "kv-buffer") for mode in ("fp32", "int8", "int4")]
    for row in r["rows"]:
        measured(row["tokens_per_s"], row["prefill_ms"])
        assert 0 <= row["agreement_with_fp32"] <= 1
        if not row["export"].endswith("fp32"):
            measured(row["perplexity"])  # from the gate, on the trained model's held-out text
    assert all(row["agreement_with_fp32"] == 1 for row in r["rows"] if row["export"].endswith("fp32"))
    assert isinstance(r["kv_buffer_fp32_tokens_equal_default"], bool)


def test_web(tmp_path):
    """onnxruntime-web in Node (.venv-web): wasm rows, the ORT package, the lowering timed on wasm."""
    r = smoke("web", tmp_path)
    assert not r["failures"], r["failures"]
    got = {(row["export"], row["provider"]) for row in r["rows"]}
    assert got == {("decoder-int8-wasm", p) for p in ("cpu", "wasm", "wasm (1 thread)")}
    for row in r["rows"]:
        for phase in row["phases"]:
            measured(*phase["samples_ms"])
    assert [u["provider"] for u in r["unavailable"]] == ["webgpu"]  # Node has no WebGPU adapter
    export = r["exports"]["decoder-int8-wasm"]
    assert "ai.onnx::MatMulInteger" in export["ops"]  # int8 ran on wasm
    measured(export["ort_format"]["package_bytes"], export["ort_format"]["operators"])
    timed = export["lowering"][0]["timings"]
    assert timed and all(ms > 0 for case in timed.values() for ms in case.values())


def test_gqa_fast_path(tmp_path):
    """Builds benchmarks.genai's fastattn models itself: no GenAI environment needed."""
    r = smoke("gqa_fast_path", tmp_path)
    paths = ["today (mha path), plain", "GQA, guard dropped, plain", "GQA, guard dropped, shared buffer",
             "GQA + rotary folded, plain", "GQA + rotary folded, shared buffer"]  # fmt: skip
    assert [(row["precision"], row["path"]) for row in r["rows"]] == [(p, path) for p in ("fp32", "int4") for path in paths]
    for row in r["rows"]:
        measured(row["decode_ms"], *row["rounds_ms"])
    for check in r["checks"].values():
        assert check["shared_tokens_equal_plain"] is True  # one buffer for past and present changes no token
        assert check["folded_vs_export_max_logits_error"] < 1e-3


@pytest.mark.skipif(not GENAI_PY.is_file(), reason="no .venv-genai (make genai-env; not part of make test)")
def test_genai_and_genai_graphs(tmp_path):
    r = smoke("genai", tmp_path / "genai")
    rows = {row["name"]: row for row in r["rows"]}
    assert set(rows) == {"pytorch-eager", "fastattn-fp32", "fastattn-int8", "fastattn-int4", "fastattn-kv-fp32",
                         "fastattn-kv-int4", "genai-fp32", "genai-int4"}  # fmt: skip
    for row in rows.values():
        measured(row["tokens_per_s"], row["prefill_ms"], row["decode_ms_per_token"], row["peak_rss_mb"], row["size_mb"])
        assert all(len(tokens) == r["settings"]["new"] for tokens in row["tokens"])
    assert rows["genai-fp32"]["transformers_reference"]["identical"]  # GenAI's fp32 graph decodes as transformers does
    graphs = smoke("genai_graphs", tmp_path / "graphs", "--workdir", str(tmp_path / "genai" / "work"))
    assert [row["model"] for row in graphs["rows"]] == ["genai-fp32", "fastattn-fp32", "genai-int4", "fastattn-int4"]
    for row in graphs["rows"]:
        measured(row["decode_ms"], *row["rounds_ms"])



@pytest.mark.skipif(not GENAI_PY.is_file(), reason="no .venv-genai (make genai-env; not part of make test)")
def test_genai_hf(tmp_path):
    """One Hugging Face checkpoint read by GenAI's builder and by fastattn: identical weights, so the fp32
    tokens of the two libraries and of transformers are equal."""
    r = smoke("genai_hf", tmp_path)
    rows = {row["name"]: row for row in r["rows"]}
    assert set(rows) == {"fastattn-fp32", "fastattn-int4", "fastattn-kv-fp32", "fastattn-kv-int4", "genai-fp32",
                         "genai-int4"}  # fmt: skip
    for row in rows.values():
        measured(row["tokens_per_s"], row["prefill_ms"], row["decode_ms_per_token"], row["peak_rss_mb"], row["size_mb"])
        assert all(len(tokens) == r["settings"]["new"] for tokens in row["tokens"])
    for name in ("fastattn-fp32", "fastattn-kv-fp32"):
        assert rows[name]["agreement"]["identical"], rows[name]["agreement"]  # same weights, same greedy tokens
    assert r["transformers_agreement"]["identical"] and r["genai_transformers_agreement"]["identical"]
    measured(r["ratios"]["fp32"], r["ratios"]["int4"], r["ratios"]["int4_peak_rss"])

def test_attention_quality(tmp_path):
    r = smoke("attention_quality", tmp_path)
    assert [row["pattern"] for row in r["rows"]] == ["sliding:16", "hierarchical:16"]
    assert r["long"]["seq"] > r["training"]["seq"]  # the second perplexity is scored beyond the training length
    for row in r["rows"]:
        measured(row["perplexity"], row["long_perplexity"], *row["prefill_ms"].values(), *row["decode_tokens_per_s"].values())
        assert row["perplexity"] < 300 and row["long_perplexity"] < 300  # a byte LM after a few steps: below uniform (256)
    assert r["rows"][1]["kernel"][0].startswith("hierarchical")


def test_openvino_int8(tmp_path):
    """fp32 and int8-static on OpenVINO EP, each with the scalar folding and without it (-split)."""
    record = smoke("openvino_int8", tmp_path)
    rows = bench_rows(record["bench"])
    want = {f"default-{p}{s}" for p in ("fp32", "int8") for s in ("", "-split")}
    assert {row["export"] for row in rows} == want and {row["provider"] for row in rows} == {"openvino"}
    # folded: the whole graph is one OpenVINO subgraph; split: more than one partition, or CPU EP nodes
    assert record["placement"]["default-fp32"] == record["placement"]["default-int8"] == "OpenVINO 1"
    assert record["placement"]["default-fp32-split"] != "OpenVINO 1"


def test_optimum_minilm(tmp_path):
    r = smoke("optimum_minilm", tmp_path)
    shapes = [tuple(s) for s in r["shapes"]]
    assert shapes == [(1, 16), (1, 32), (2, 16)] and r["rounds"] == 1 and not r["failures"]
    for result in r["bench_rounds"]:
        bench_rows(result)
    pairs = {(x["batch"], x["sequence"], x["fastattn"], x["other"]) for x in r["ratios"]}
    assert len(pairs) == 4 * len(shapes)  # fp32 vs o3 and Optimum fp32, int8 vs Optimum int8 and o3, each shape
    for x in r["ratios"]:
        measured(x["ratio"], *x["rounds"])
        assert x["low"] <= x["ratio"] <= x["high"]
    labels = {m["export"] for m in r["medians"]}
    assert {"fastattn-fp32", "fastattn-int8", "optimum-fp32", "optimum-o3", "optimum-int8"} <= labels
    accuracy = {a["export"]: a for a in r["accuracy"]}
    assert accuracy["fastattn-fp32"]["cosine_min"] > 0.99999  # the float export computes what transformers does
    assert accuracy["optimum-o3"]["cosine_min"] > 0.9999
    assert accuracy["fastattn-int8"]["cosine"] > 0.99 and r["fastattn_int8"]["passed"]
    measured(r["gemm"]["machine_u8s8_gops"], *(v["gops"] for v in r["gemm"]["int8_model"].values()))


def test_hf_families(tmp_path):
    """An encoder and a decoder family on their tiny checkpoints: exported, validated, greedy tokens and gates."""
    r = smoke("hf_families", tmp_path)
    rows = r["rows"]
    assert set(rows) == {"bert", "gpt2"} and r["new_tokens"] == 4
    for name, row in rows.items():
        measured(row["export_s"])
        assert row["validation_passed"] and row["validation_worst_max_abs"] < 1e-4
        assert row["attention_nodes"] == 2 == len(row["attention"])
        for mode in ("int8", "int4"):
            gate = row[mode]
            assert gate["gate"] in ("passed", "failed") and gate["quantized_weights"] > 0
            assert gate["outcome"] == "exported" or gate["outcome"].startswith("rejected: ")
        assert row["int8"]["gate"] == "passed" and row["int8"]["outcome"] == "exported"
    assert "greedy_equal_tokens" not in rows["bert"]  # an encoder generates nothing
    assert rows["gpt2"]["greedy_equal_tokens"] == f"{4 * len(r['prompts'])}/{4 * len(r['prompts'])}"
    measured(rows["gpt2"]["int8"]["float"]["perplexity"], rows["gpt2"]["int8"]["quantized"]["perplexity"])
    measured(rows["bert"]["int8"]["quantized"]["cosine"])
    assert all(kind.startswith("model:causal:") for kind in rows["gpt2"]["attention"])


def test_hf_minilm(tmp_path):
    """A tiny random BERT through the MiniLM script: fp32 and int8 exports beside transformers' BertModel."""
    r = smoke("hf_minilm", tmp_path)
    assert set(r["ms"]) == {"pytorch-eager", "fastattn-fp32", "fastattn-int8"}
    measured(*r["ms"].values(), *r["speedup_vs_eager"].values(), *r["export_s"].values())
    assert r["sentences"] == 8 and r["checkpoint"]["hidden_size"] == 64  # the tiny model, not the real one
    assert r["validation_passed"] and r["validation_worst_max_rel"] < 1e-4
    cos = r["pooled_cosine_vs_pytorch"]
    assert cos["fp32"]["min"] > 0.99999  # the float export computes what transformers computes
    assert cos["int8"]["min"] > 0.99 and r["int8_gate"]["passed"] and r["int8_gate"]["quantized"] > 0
    assert r["attention_nodes"] == 2


def test_hf_routes(tmp_path):
    """A tiny Llama exported both ways into fastattn: the two exports agree with each other and with transformers."""
    r = smoke("hf_routes", tmp_path)
    rows = r["rows"]
    assert set(rows) == {"mapped", "attention-interface"} and r["sequence"] == 32
    for row in rows.values():
        measured(row["prefill_ms"], row["export_seconds"])
        assert row["validation_passed"] and row["validation_worst_max_rel"] < 1e-3
        assert row["attention_nodes"] == r["llama"]["num_hidden_layers"]
    assert rows["mapped"]["cache"] and not rows["attention-interface"]["cache"]
    assert r["logits_max_abs_difference"] < 1e-4
    measured(r["prefill_ratio_interface_over_mapped"])
