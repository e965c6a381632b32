"""The onnx-attention rule (ONNX ``Attention``-23 with a mask from positions) against the function body.

Also pins the ONNX Runtime conventions the rule relies on, so an upgrade that changes one of
them fails here first: the mask's shape, top-left ``is_causal`` without a past input, and
zeros for rows that see no key.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from fastattn.exporter.lowering.apply import Choice, lower
from fastattn.exporter.lowering.base import AttentionSite
from fastattn.exporter.lowering.onnx_attention import ONNX_ATTENTION
from tests import numpy_reference
from tests.attention.grid import CASES, Case
from tests.lowering.harness import feeds, lowered_vs_function, run, site_and_model

TOL = 1e-5

# beyond the grid: S not a multiple of the window, S < W, a past longer than the window,
# padded decode, bidirectional windows after a past, a single-key window
EXTRA = [
    Case(2, 23, 0, 4, 2, 8, causal=True, window=6, masked=True),
    Case(2, 3, 0, 4, 2, 8, causal=False, window=6, masked=True),
    Case(2, 9, 20, 4, 2, 8, causal=True, window=4, masked=True),
    Case(3, 1, 17, 4, 1, 8, causal=True, window=4, global_tokens=2, masked=True),
    Case(2, 1, 40, 4, 2, 8, causal=True, masked=True),
    Case(2, 5, 11, 4, 2, 8, causal=False, window=3, global_tokens=2, masked=True),
    Case(2, 17, 9, 4, 2, 8, causal=False, window=3, masked=True),
    Case(1, 30, 0, 2, 2, 4, causal=False, window=1),
    Case(2, 4, 6, 4, 4, 8, causal=False, masked=True),
    Case(2, 3, 5, 4, 2, 8, causal=True),
    Case(1, 1, 9, 4, 1, 8, causal=True),
]


def lowered(case: Case, self_attention: bool = False) -> tuple[ir.Model, AttentionSite]:
    """The case's one-node model lowered by onnx-attention; ``self_attention`` gives key and
    query one sequence dim, as exported models do."""
    site, model = site_and_model(case, has_mask=case.masked)
    if self_attention:
        for value in (site.key, site.value):
            value.shape = ir.Shape([value.shape[0], site.query.shape[1], value.shape[2]])
        site = AttentionSite.from_node(site.node)
    lower(model, {site.node.name: Choice(ONNX_ATTENTION)}, {site.node.name: site})
    return model, site


@pytest.mark.parametrize("case", CASES + EXTRA, ids=str)
def test_matches_function_body(case: Case):
    errors = lowered_vs_function(ONNX_ATTENTION, case)
    assert isinstance(errors, dict), errors.reason
    assert errors["output"] < TOL, errors
    assert errors["present_key"] == errors["present_value"] == 0.0, errors


PLAIN_CAUSAL = [c for c in CASES + EXTRA if c.causal and not c.window and not c.masked]


@pytest.mark.parametrize("case", PLAIN_CAUSAL, ids=str)
def test_plain_causal_self_attention_uses_is_causal_without_a_cache(case: Case):
    """is_causal (top-left without a past input) where the queries are all the keys; a mask after a past."""
    model, _ = lowered(case, self_attention=True)
    (node,) = [n for n in model.graph if n.op_type == "Attention"]
    uses_flag = "is_causal" in node.attributes and node.inputs[3] is None
    assert uses_flag == (case.past == 0)
    want = run(site_and_model(case, has_mask=False)[1], feeds(case))
    got = run(model, feeds(case))
    assert np.abs(got[0] - want[0]).max() < TOL


def test_cross_attention_keeps_the_mask():
    """Key and query lengths differ (P + T = 12 keys, S = 5 queries at positions 7..11): the
    mask aligns the queries bottom-right."""
    case = Case(2, 5, 4, 4, 2, 8, causal=True)
    model, _ = lowered(case)
    assert not any(n.op_type == "Attention" and "is_causal" in n.attributes for n in model.graph)
    inputs = feeds(case)
    rng = np.random.default_rng(1)
    inputs["key"] = rng.standard_normal((2, 8, 16)).astype(np.float32)
    inputs["value"] = rng.standard_normal((2, 8, 16)).astype(np.float32)
    want = run(site_and_model(case, has_mask=False)[1], inputs)
    got = run(model, inputs)
    assert np.abs(got[0] - want[0]).max() < TOL
    assert all(np.array_equal(g, w) for g, w in zip(got[1:], want[1:]))


def hidden_rows(case: Case) -> np.ndarray:
    """(B, S) bool: the queries that see no key (all their visible keys are padding)."""
    mask = case.arrays()[4]
    return ~numpy_reference.visible_rows(case.batch, case.seq, case.past, mask, case.causal, case.window,
                                         case.global_tokens)  # fmt: skip


HIDDEN = [c for c in CASES + EXTRA if hidden_rows(c).any()]


@pytest.mark.parametrize("case", HIDDEN, ids=str)
def test_rows_without_keys_are_zero(case: Case):
    """The op's contract: a query whose visible keys are all padding outputs zeros."""
    model, _ = lowered(case)
    output = run(model, feeds(case))[0]
    assert np.all(output[hidden_rows(case)] == 0.0)


def test_accepts_every_kind():
    for case in CASES + EXTRA:
        site, _ = site_and_model(case, has_mask=case.masked)
        assert ONNX_ATTENTION.check(site), case


def test_lowered_model_is_valid_opset_23():
    case = Case(2, 5, 3, 4, 2, 8, causal=True, window=2, global_tokens=1, masked=True)
    model, _ = lowered(case)
    assert model.opset_imports[""] == 23
    assert [n.op_type for n in model.graph].count("Attention") == 1
    assert not model.functions  # the function bodies went with the node
    onnx.checker.check_model(ir.serde.serialize_model(model), full_check=True)


def _attention_session(mask_shape, causal: int = 0) -> ort.InferenceSession:
    """ONNX Attention-23 as the rule calls it: q (B,4,S,8), k/v (B,2,L,8), a boolean mask."""
    f32 = TensorProto.FLOAT
    shapes = {"q": ["B", 4, "S", 8], "k": ["B", 2, "L", 8], "v": ["B", 2, "L", 8], "m": mask_shape}
    inputs = [helper.make_tensor_value_info(name, TensorProto.BOOL if name == "m" else f32, shape)
              for name, shape in shapes.items() if shape]  # fmt: skip
    node = helper.make_node("Attention", ["q", "k", "v", "m" if mask_shape else ""], ["y"], is_causal=causal)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", f32, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_onnx_runtime_conventions():
    """What the rule's mapping rests on, on ONNX Runtime's CPU kernel."""
    B, S, L = 2, 3, 7
    rng = np.random.default_rng(0)
    base = {name: rng.standard_normal(shape).astype(np.float32)
            for name, shape in (("q", (B, 4, S, 8)), ("k", (B, 2, L, 8)), ("v", (B, 2, L, 8)))}  # fmt: skip
    query, key = np.arange(S)[:, None], np.arange(L)[None]
    # without a past input is_causal is top-left: a cache or cross-attention needs the mask
    by_flag = _attention_session(None, causal=1).run(None, base)[0]
    top_left = _attention_session(["S", "L"]).run(None, {**base, "m": key <= query})[0]
    bottom_right = _attention_session(["S", "L"]).run(None, {**base, "m": key <= query + L - S})[0]
    assert np.abs(by_flag - top_left).max() < 1e-6 and np.abs(by_flag - bottom_right).max() > 0.1
    # a row whose mask is all false gives zeros (not NaN, not the mean of the values)
    mask = np.ones((B, 1, S, L), bool)
    mask[1, 0, 2] = False
    output = _attention_session(["B", 1, "S", "L"]).run(None, {**base, "m": mask})[0]
    assert np.all(output[1, :, 2] == 0.0) and np.all(output[0, :, 2] != 0.0)
    # a (B, 1, 1, L) padding mask is refused: the mask needs its query axis
    with pytest.raises(Exception, match="q_sequence_length"):
        _attention_session(["B", 1, 1, "L"]).run(None, {**base, "m": np.ones((B, 1, 1, L), bool)})


@pytest.mark.parametrize("case", [CASES[0], CASES[9], EXTRA[2]], ids=str)
def test_output_alone_when_presents_are_unused(case: Case):
    site, model = site_and_model(case, has_mask=case.masked)
    want = run(model, feeds(case))[0]
    model.graph.outputs[:] = model.graph.outputs[:1]
    site = AttentionSite.from_node(site.node)
    assert not site.presents_used
    lower(model, {site.node.name: Choice(ONNX_ATTENTION)}, {site.node.name: site})
    assert np.abs(run(model, feeds(case))[0] - want).max() < TOL
