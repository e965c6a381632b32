"""One configuration measured in this process: phases, sizes, derived figures, and IOBinding that computes
what a plain run computes."""

from __future__ import annotations

import numpy as np
import pytest

from fastattn.bench.measure import _Bound, measure, phase_plan, sizes_for, step_inputs
from fastattn.bench.plan import Job, Settings
from fastattn.runtime import load
from fastattn.runtime.manifest import Manifest

FAST = Settings(threads=1, warmup=1, repeats=3, min_time=0.0, decode_steps=4, pause=0.0, isolate=False)


def test_decoder_row_has_prefill_and_decode(decoder_export):
    _, exported = decoder_export
    row = measure(Job(str(exported.output), "dec", "cpu", 2, 8, FAST))
    prefill, decode = row.phases
    assert (prefill.name, prefill.graph, prefill.sizes) == (
        "prefill",
        "model",
        {"batch": 2, "sequence": 8, "past_sequence": 0},
    )
    assert (decode.name, decode.sizes) == ("decode", {"batch": 2, "sequence": 1, "past_sequence": 8})
    assert (
        len(prefill.samples_ms) == 3 and len(decode.samples_ms) == 4
    )  # one round of 4 steps covers 3 repeats
    p50 = prefill.summary.p50
    assert row.latency.p50 == row.prefill_ms == p50
    assert row.tokens_per_s == pytest.approx(2 * 8 * 1e3 / p50) and row.sequences_per_s == pytest.approx(
        2e3 / p50
    )
    assert row.decode_tokens_per_s == pytest.approx(2 * 1e3 / decode.summary.p50)
    assert row.session_providers[0] == "CPUExecutionProvider" and row.iobinding and row.threads == 1
    assert row.attention == "sliding:8+causal" and row.model == "tiny-decoder" and row.precision == "fp32"
    assert (
        row.peak_memory_mb is not None and row.peak_memory_mb >= 0
    )  # in process: memory freed earlier is reused
    assert row.others_cpu is None or 0 <= row.others_cpu <= 1


def test_decode_through_iobinding_equals_plain_runs(decoder_export):
    """Feeding present back as past through OrtValues gives the logits a plain numpy run gives."""
    _, exported = decoder_export
    session = load(exported.output, threads=1).graph()
    entry, bound = session.entry, _Bound(session, "cpu")
    prompt = session.sample(sizes_for(entry, 2, 8), seed=0)
    steps = step_inputs(entry, 2, 8, 2, seed=0)
    out = bound.run(bound.values(prompt))
    feeds, plain = dict(prompt), session.run(prompt)
    for step in steps:
        out = bound.run({**bound.values(step), **{p.past: out[p.present] for p in entry.cache}})
        feeds = {**step, **{p.past: plain[p.present] for p in entry.cache}}
        plain = session.run(feeds)
    # sliding:8 keeps its last 7 positions, the causal layer all 10
    assert out["present_key_0"].shape() == [2, 2, 7, 8] and out["present_key_1"].shape() == [2, 2, 10, 8]
    np.testing.assert_array_equal(out["logits"].numpy(), plain["logits"])


def test_encoder_decoder_phases(seq2seq_export):
    _, exported = seq2seq_export
    manifest = Manifest.load(exported.output)
    assert [(p.name, p.graph.name) for p in phase_plan(manifest, 4)] == [
        ("encode", "encoder"),
        ("prefill", "decoder"),
        ("decode", "decoder"),
    ]
    assert [p.name for p in phase_plan(manifest, 0)] == ["encode", "prefill"]
    row = measure(Job(str(exported.output), "s2s", "cpu", 1, 12, FAST))
    encode, prefill, decode = row.phases
    assert encode.sizes == {"batch": 1, "encoder_sequence": 12}
    assert prefill.sizes == {"batch": 1, "sequence": 12, "encoder_sequence": 12, "past_sequence": 0}
    assert decode.sizes["past_sequence"] == 12 and decode.sizes["sequence"] == 1
    assert row.latency == encode.summary and row.prefill_ms == prefill.summary.p50
