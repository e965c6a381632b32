"""BART and Marian end to end: two graphs, self- and cross-attention nodes, and greedy generation equal to
transformers' generate (decoder started from decoder_start_token_id, prompts of different lengths in one batch)."""

from __future__ import annotations

import shutil

import pytest
import torch
from click.testing import CliRunner

import fastattn.runtime as rt
from fastattn.cli import main
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


def test_optimum_layout_generates_the_runtime_tokens(hf_checkpoint, hf_export, tmp_path):
    """`fastattn package OUT --optimum` adds encoder_model.onnx + decoder_model_merged.onnx (cross keys/values in an
    If on use_cache_branch), checked against the export's graphs; ORTModelForSeq2SeqLM and pipeline() then give
    fastattn.runtime's greedy tokens. A decoder needs no layout: one line, exit 2."""
    from optimum.onnxruntime import ORTModelForSeq2SeqLM
    from transformers import AutoTokenizer, pipeline

    out = tmp_path / "bart"
    shutil.copytree(hf_export("bart").output, out)
    run = CliRunner().invoke(main, ["package", str(out), "--optimum"])
    assert run.exit_code == 0, run.output
    manifest = rt.load(out).manifest
    assert manifest.optimum.files == ["encoder_model.onnx", "decoder_model_merged.onnx"]
    assert manifest.optimum.validation.passed and {"encoder_model.onnx", "decoder_model_merged.onnx"} <= set(manifest.files)
    optimum = ORTModelForSeq2SeqLM.from_pretrained(out)
    assert optimum.decoder.is_merged and optimum.decoder_with_past is None
    want = rt.load(out).generate(PROMPTS, NEW, stop_ids=[]).tokens
    assert reference.greedy(optimum, PROMPTS, NEW, pad=1, seq2seq=True) == want
    # this tiny BART repeats a token or two: its logits at each cached step say more than its argmax
    ids, mask = torch.tensor([PROMPTS[0]]), torch.ones(1, len(PROMPTS[0]), dtype=torch.long)
    config = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, output_scores=True, return_dict_in_generate=True)
    hf = reference.seq2seq_lm(hf_checkpoint("bart"))
    with torch.no_grad():
        scores = [torch.stack(m.generate(input_ids=ids, attention_mask=mask, **config).scores) for m in (optimum, hf)]
    finite = scores[0].isfinite() & scores[1].isfinite()  # min_new_tokens masks EOS where a config names it
    assert finite.float().mean() > 0.99 and (scores[0] - scores[1])[finite].abs().max() < 1e-4

    prompt = "return the sum of two numbers"
    text = pipeline("text2text-generation", model=optimum, tokenizer=AutoTokenizer.from_pretrained(out))(
        prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False, num_beams=1, return_tensors=True)  # fmt: skip
    ids = rt.load_tokenizer(out).encode(prompt)
    assert list(map(int, text[0]["generated_token_ids"][1:])) == rt.load(out).generate(ids, 12, stop_ids=[]).tokens[0]

    decoder = CliRunner().invoke(main, ["package", str(hf_export("llama").output), "--optimum"])
    assert decoder.exit_code == 2 and "ORTModelForCausalLM" in decoder.output and len(decoder.output.splitlines()) == 1
