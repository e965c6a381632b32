"""The blocked-local rule (query blocks against key bands, one ONNX Attention-23) against the function body.

Each case runs twice: the rule as registered (``If`` blocks pay, blocked, dense) and the
blocked form forced with blocks of 4 queries, so small cases cross many block borders.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from fastattn.exporter.lowering import blocked_local
from fastattn.exporter.lowering.apply import Choice, lower
from fastattn.exporter.lowering.base import AttentionSite, LoweringRule
from fastattn.exporter.lowering.blocked_local import BLOCKED_LOCAL, BlockedLocal, block_size
from fastattn.exporter.lowering.blocked_matmul import BLOCKED_MATMUL, BlockedMatMul
from fastattn.exporter.lowering.onnx_attention import ONNX_ATTENTION
from tests.attention.grid import CASES, Case
from tests.lowering.harness import Marked, feeds, lowered_vs_function, run, site_and_model

TOL = 1e-5
FORCED = BlockedLocal(block=4, dense_ratio=0)
RULES = {"registered": BLOCKED_LOCAL, "forced-b4": FORCED, "matmul": BLOCKED_MATMUL, "matmul-b4": BlockedMatMul(block=4)}

# beyond the grid: S not a multiple of the block or window, S < W, P > W, padded decode,
# bidirectional after a past, W = 1, a window longer than everything; and sequences long
# enough for the registered rule to take its blocked branch
EXTRA = [
    Case(2, 23, 0, 4, 2, 8, causal=True, window=6, masked=True),
    Case(2, 3, 0, 4, 2, 8, causal=False, window=6, masked=True),
    Case(2, 9, 20, 4, 2, 8, causal=True, window=4, masked=True),
    Case(3, 1, 17, 4, 1, 8, causal=True, window=4, global_tokens=2, masked=True),
    Case(2, 1, 0, 4, 2, 8, causal=True, window=3, masked=True),
    Case(2, 5, 11, 4, 2, 8, causal=False, window=3, global_tokens=2, masked=True),
    Case(2, 17, 9, 4, 2, 8, causal=False, window=3, masked=True),
    Case(2, 1, 40, 4, 2, 8, causal=False, window=3, global_tokens=3, masked=True),
    Case(1, 30, 0, 2, 2, 4, causal=False, window=1),
    Case(2, 33, 2, 4, 4, 8, causal=False, window=40, global_tokens=4, masked=True),
    Case(2, 200, 0, 4, 2, 8, causal=True, window=8, masked=True),
    Case(1, 150, 0, 2, 1, 8, causal=False, window=10, global_tokens=3, masked=True),
    Case(2, 1, 120, 4, 2, 8, causal=True, window=8, masked=True),
    Case(2, 40, 100, 4, 1, 8, causal=True, window=8, global_tokens=2, masked=True),
]
WINDOWED = [c for c in CASES + EXTRA if c.window]


@pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
@pytest.mark.parametrize("case", WINDOWED, ids=str)
def test_matches_function_body(case: Case, rule: BlockedLocal):
    errors = lowered_vs_function(rule, case)
    assert isinstance(errors, dict), errors.reason
    assert errors["output"] < TOL, errors
    assert errors["present_key"] == errors["present_value"] == 0.0, errors


@pytest.mark.parametrize("case", [c for c in CASES if not c.window], ids=str)
def test_refuses_nodes_without_a_window(case: Case):
    result = lowered_vs_function(BLOCKED_LOCAL, case)
    assert not result and result.reason == "no window: every query sees every key, there is no band to cut"


@pytest.mark.parametrize(
    ("case", "blocked"),
    [
        (Case(1, 80, 0, 2, 1, 8, causal=True, window=8), True),  # 32 + 7 columns, 2 x 39 <= 80 keys
        (Case(1, 76, 0, 2, 1, 8, causal=True, window=8), False),
        (Case(1, 1, 40, 2, 1, 8, causal=True, window=8), True),  # decode: the last 8 of 41 keys
        (Case(1, 1, 10, 2, 1, 8, causal=True, window=8), False),
        (Case(1, 100, 0, 2, 1, 8, causal=False, window=8, global_tokens=3), True),  # 32 + 14 + 3 columns
        (Case(1, 96, 0, 2, 1, 8, causal=False, window=8, global_tokens=3), False),
    ],
    ids=str,
)
def test_blocks_only_where_they_pay(case: Case, blocked: bool, monkeypatch):
    """The registered rule runs the blocked form where the keys number at least twice a block's
    columns, else the dense ONNX Attention."""
    monkeypatch.setattr(blocked_local, "ONNX_ATTENTION", Marked(ONNX_ATTENTION))
    site, model = site_and_model(case, has_mask=False)
    lower(model, {site.node.name: Choice(blocked_local.BLOCKED_LOCAL)}, {site.node.name: site})
    output = run(model, feeds(case))[0]
    assert not np.all(output == Marked.MARK) == blocked


def test_one_model_serves_every_shape():
    """Batch, sequence and past are read at run time: one session, many shapes."""
    case = Case(2, 8, 5, 4, 2, 8, causal=True, window=6, global_tokens=2, masked=True)
    site, model = site_and_model(case, has_mask=True)
    portable = _session(model)
    lower(model, {site.node.name: Choice(blocked_local.BLOCKED_LOCAL)}, {site.node.name: site})
    session = _session(model)
    for batch, seq, past in ((2, 8, 5), (1, 1, 60), (3, 77, 0), (2, 30, 31), (1, 3, 1)):
        inputs = feeds(replace(case, batch=batch, seq=seq, past=past))
        empty = np.zeros((batch, case.kv_heads, 0, case.head_size), np.float32)
        inputs.setdefault("past_key", empty)  # a first prompt: an empty cache
        inputs.setdefault("past_value", empty)
        got, want = session.run(None, inputs), portable.run(None, inputs)
        assert np.abs(got[0] - want[0]).max() < TOL, (batch, seq, past)
        assert all(np.array_equal(g, w) for g, w in zip(got[1:], want[1:]))


def _session(model: ir.Model, options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    proto = ir.serde.serialize_model(model).SerializeToString()
    return ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"])


def _materialised(rule: LoweringRule, case: Case, tmp_path) -> tuple[int, int]:
    """(largest tensor any node writes, elements of the attention scores per head) in bytes and
    count, from ONNX Runtime's profile of the lowered one-node model."""
    site, model = site_and_model(case, has_mask=case.masked)
    lower(model, {site.node.name: Choice(rule)}, {site.node.name: site})
    attention = next(n for n in model.graph if n.op_type == "Attention")
    mask_node = attention.inputs[3].producer().name  # boolean, (N, 1, queries, keys): the score tile per head
    options = ort.SessionOptions()
    options.enable_profiling, options.profile_file_prefix = True, str(tmp_path / rule.name)
    session = _session(model, options)
    session.run(None, feeds(case))
    events = [e for e in json.loads(open(session.end_profiling()).read()) if e.get("cat") == "Node"]
    sizes = {e["name"].removesuffix("_kernel_time"): int(e["args"]["output_size"]) for e in events}
    return max(sizes.values()), sizes[mask_node]


@pytest.mark.parametrize("global_tokens", [0, 3])
def test_work_grows_linearly(global_tokens: int, tmp_path):
    """Doubling S doubles the scores and the largest intermediate of the blocked form; the dense
    mask of onnx-attention quadruples (the measurement tells the two apart)."""
    case = Case(1, 512, 0, 2, 1, 8, causal=True, window=16, global_tokens=global_tokens, masked=True)
    longer = replace(case, seq=1024)
    blocked = [_materialised(FORCED, c, tmp_path) for c in (case, longer)]
    dense = [_materialised(ONNX_ATTENTION, c, tmp_path) for c in (case, longer)]
    assert blocked[1][1] == 2 * blocked[0][1]  # S/4 blocks of 4 queries x (4 + 15 + G) keys
    assert blocked[0][1] == 512 * (4 + 15 + global_tokens)
    assert blocked[1][0] <= 2.01 * blocked[0][0]
    assert dense[1][1] == 4 * dense[0][1] == 4 * 512 * 512


def test_block_size_follows_the_window():
    assert [block_size(w) for w in (1, 32, 100, 256, 4096)] == [32, 32, 100, 128, 128]


def test_lowered_model_is_valid_opset_23():
    case = Case(2, 5, 3, 4, 2, 8, causal=False, window=2, global_tokens=1, masked=True)
    site, model = site_and_model(case, has_mask=True)
    lower(model, {site.node.name: Choice(blocked_local.BLOCKED_LOCAL)}, {site.node.name: site})
    assert model.opset_imports[""] == 23
    assert [n.op_type for n in model.graph].count("If") == 1
    assert not model.functions
    onnx.checker.check_model(ir.serde.serialize_model(model), full_check=True)


@pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
@pytest.mark.parametrize("case", [EXTRA[-4], EXTRA[-1], CASES[9]], ids=str)
def test_output_alone_when_presents_are_unused(case: Case, rule: BlockedLocal):
    """An encoder's node: no present key/value is built when nothing reads them."""
    site, model = site_and_model(case, has_mask=case.masked)
    want = run(model, feeds(case))[0]
    model.graph.outputs[:] = model.graph.outputs[:1]
    site = AttentionSite.from_node(site.node)
    assert not site.presents_used
    lower(model, {site.node.name: Choice(rule)}, {site.node.name: site})
    assert np.abs(run(model, feeds(case))[0] - want).max() < TOL


def test_blocked_branch_with_an_empty_cache_in_a_model(tmp_path):
    """Prefill through a decoder's (empty) past inputs long enough to take the blocked branch.

    Regression: ORT's reshape fusion turned the head merge of an empty past into (0, 0, -1).
    """
    from fastattn.exporter.capture import capture
    from fastattn.exporter.lowering.choose import find_sites
    from fastattn.exporter.validate import torch_runner
    from fastattn.families.fastattn.graphs import model_graphs
    from fastattn.models import LayerAttention, ModelConfig, build

    cfg = ModelConfig(vocab_size=32, d_model=32, num_heads=4, kv_heads=2, ffn_dim=32,
                      decoder_layers=(LayerAttention.parse("sliding:8"),))  # fmt: skip
    graph = model_graphs(build(cfg))[0]
    model = capture(graph)
    sites = find_sites(model)
    lower(model, {name: Choice(blocked_local.BLOCKED_LOCAL) for name in sites}, sites)
    session = ort.InferenceSession(ir.serde.serialize_model(model).SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.arange(200).reshape(1, 200) % 32, "attention_mask": np.ones((1, 200), np.int64),
             "past_key_0": np.zeros((1, 2, 0, 8), np.float32), "past_value_0": np.zeros((1, 2, 0, 8), np.float32)}  # fmt: skip
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    want = torch_runner(graph)(feeds)
    assert np.abs(got["logits"] - want["logits"]).max() < 1e-4
