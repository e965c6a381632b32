"""BERT, RoBERTa and DistilBERT end to end: export, attention nodes, hidden states of the ONNX model against
transformers' on a left-padded batch, and int8 gated on the pooled embeddings of held-out text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastattn.runtime as rt
from fastattn.errors import InputError
from fastattn.runtime import schema
from tests.hf import reference
from tests.hf.checkpoints import VOCAB

ENCODERS = ["bert", "roberta", "distilbert"]


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_hidden_states_match_transformers(hf_checkpoint, hf_export, name):
    result = hf_export(name)
    manifest = result.manifest
    assert [(a.kind, a.num_heads) for a in manifest.attention] == [("full", 4)] * 2
    assert manifest.hf.task == "feature-extraction" and manifest.validation.passed
    assert manifest.arch == "encoder" and [o.name for o in manifest.graphs[0].outputs] == ["last_hidden_state"]

    ids = np.random.default_rng(0).integers(3, VOCAB, (3, 40)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 30:] = 0  # right-padded, as tokenizers pad
    mask[2, :12] = 0  # left-padded
    got = rt.load(result.output).run({"input_ids": ids, "attention_mask": mask})["last_hidden_state"]
    hf = reference.encoder(hf_checkpoint(name))
    extra = {}
    if name == "roberta":  # what transformers derives from pad tokens: positions count tokens from padding_idx+1
        m = torch.from_numpy(mask)
        extra["position_ids"] = m.cumsum(-1) * m + hf.config.pad_token_id
    with torch.no_grad():
        want = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), **extra).last_hidden_state.numpy()
    valid = mask.astype(bool)
    assert np.abs(got - want)[valid].max() < 2e-5
    with pytest.raises(InputError, match="cannot generate"):
        rt.load(result.output).generate([5, 6], 4)


def test_bert_int8_gate_on_pooled_embeddings_of_held_out_text(hf_export):
    from fastattn.quantize import Mode, QuantOptions
    from fastattn.quantize.step import QuantizeStep

    result = hf_export("bert", quantize=QuantizeStep(QuantOptions(Mode.INT8)))
    q = schema.dump(result.manifest.quantization)  # records as plain data
    assert q["passed"] and q["task"] == "sentence_embedding"
    assert q["data"].startswith("held-out stdlib text (32 paragraphs of <= 128 tokens")
    quantized = q["figures"]["quantized"]
    assert 0.999 <= quantized["cosine_min"] <= quantized["cosine"] < 1.0
    assert q["figures"]["pytorch"]["cosine"] > 0.99999
    assert result.manifest.precision == "int8" and result.manifest.validation.passed
    assert (result.output / "eval.npz").is_file()  # fastattn quantize can gate on the same text later


def test_validate_command_reruns_against_transformers(hf_checkpoint, hf_export, tmp_path):
    import shutil

    from click.testing import CliRunner

    from fastattn.cli import main

    out = tmp_path / "distilbert"
    shutil.copytree(hf_export("distilbert").output, out)
    run = CliRunner().invoke(main, ["validate", str(hf_checkpoint("distilbert")), str(out)])
    assert run.exit_code == 0 and "passed 3 cases" in run.output, run.output


def test_optimum_feature_extraction_matches_the_runtime(hf_export):
    """ORTModelForFeatureExtraction opens a BERT export as it is, also through pipeline("feature-extraction")."""
    from optimum.onnxruntime import ORTModelForFeatureExtraction
    from transformers import AutoTokenizer, pipeline

    out = hf_export("bert").output
    optimum = ORTModelForFeatureExtraction.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = ["def main(argv): return 0", "import json, and a longer line of text to pad the other one"]
    batch = tokenizer(texts, padding=True, return_tensors="np")
    model = rt.load(out)
    want = model.run({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})["last_hidden_state"]
    got = optimum(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    valid = batch["attention_mask"].astype(bool)
    assert batch["attention_mask"].min() == 0 and np.abs(got - want)[valid].max() < 1e-5
    single = np.asarray(pipeline("feature-extraction", model=optimum, tokenizer=tokenizer)(texts[0]))[0]
    ids = tokenizer(texts[0], return_tensors="np")
    alone = model.run({"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]})["last_hidden_state"][0]
    assert np.abs(single - alone).max() < 1e-5


def test_bench_optimum_rows_and_pooled_cosines(hf_checkpoint, hf_export, tmp_path, monkeypatch):
    """`fastattn bench OUT --optimum CHECKPOINT`: Optimum's fp32 / O3 / int8 exports of the same BERT are rows beside
    fastattn's and PyTorch eager's, on the same inputs, each with its pooled-embedding cosine against PyTorch on
    held-out text; the Optimum exports go to the cache (made once), never into the checkpoint directory."""
    from fastattn.bench.plan import PYTORCH, Plan, Settings
    from fastattn.bench.run import bench
    from fastattn.bench.table import markdown

    monkeypatch.setenv("FASTATTN_CACHE", str(tmp_path / "cache"))
    checkpoint, out = hf_checkpoint("bert"), hf_export("bert").output
    before = sorted(p.name for p in checkpoint.iterdir())
    settings = Settings(threads=1, warmup=1, repeats=3, min_time=0.0, isolate=False)
    plan = Plan.create([out], sequences=[16], optimum=[checkpoint], settings=settings)
    result = bench(plan)
    assert not result.failures
    rows = {(r.export, r.provider): r for r in result.rows}
    assert set(rows) == {(out.name, "cpu"), ("optimum-fp32", "cpu"), ("optimum-o3", "cpu"), ("optimum-int8", "cpu"),
                         (checkpoint.name, PYTORCH)}  # fmt: skip
    assert all(0 < r.latency.p50 < float("inf") and r.phases[0].sizes["sequence"] == 16 for r in rows.values())
    assert rows[("optimum-int8", "cpu")].precision == "int8"
    acc = {(a.export, a.pytorch): a for a in result.accuracy}
    assert set(acc) == {(out.name, False), ("optimum-fp32", False), ("optimum-o3", False), ("optimum-int8", False),
                        (checkpoint.name, True)}  # fmt: skip
    assert "held-out" in acc[("optimum-fp32", False)].data
    for exact in (out.name, "optimum-fp32", "optimum-o3"):
        assert acc[(exact, False)].cosine_min > 0.99999, exact
    assert 0.9 < acc[("optimum-int8", False)].cosine < 0.99999  # int8 moves the embeddings, but not far
    assert "accuracy vs PyTorch" in markdown(result) and "cos 1.00000" in markdown(result)
    assert {o["label"] for o in result.optimum} == {"optimum-fp32", "optimum-o3", "optimum-int8"}
    assert sorted(p.name for p in checkpoint.iterdir()) == before
    made = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.onnx")}
    assert len(made) == 3

    steps: list[str] = []
    again = bench(Plan.create([out], sequences=[16], optimum=[checkpoint], optimum_variants=["int8"], settings=settings),
                  progress=steps.append)  # fmt: skip
    assert not any("exporting" in s for s in steps)  # the cache holds them: nothing exported twice
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.onnx")} == made
    assert {r.export for r in again.rows} == {out.name, "optimum-int8", checkpoint.name}


def test_bench_optimum_needs_the_export_of_that_checkpoint(hf_checkpoint, hf_export, tmp_path):
    from click.testing import CliRunner

    from fastattn.cli import main

    out = str(hf_export("bert").output)
    for other, says in ((hf_checkpoint("roberta"), "no export given was made from"), (tmp_path, "not a Hugging Face")):
        run = CliRunner().invoke(main, ["bench", out, "--optimum", str(other), "--seq", "8"])
        assert run.exit_code == 2 and says in run.output and len(run.output.strip().splitlines()) == 1, run.output
    run = CliRunner().invoke(main, ["bench", out, "--optimum", str(hf_checkpoint("bert")), "--optimum-variants", "o5"])
    assert run.exit_code == 2 and "bad Optimum variants" in run.output
