"""The portable ONNX form: each overload of fastattn::Attention, run by ONNX Runtime, vs NumPy."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from fastattn.attention.onnx_function import DOMAIN, OP_TYPE, attach_functions, function_protos, overload_for
from tests import numpy_reference
from tests.attention.grid import CASES, Case
from tests.attention.single_node import single_node_model


@pytest.mark.parametrize("case", CASES, ids=str)
def test_function_matches_numpy(case: Case):
    q, k, v, past, mask = case.arrays()
    model = single_node_model(case, has_mask=mask is not None)
    assert model.graph.node[0].overload == overload_for(past is not None, mask is not None)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"query": q, "key": k, "value": v}
    if past is not None:
        feeds.update(past_key=past[0], past_value=past[1])
    if mask is not None:
        feeds["key_mask"] = mask
    out, pk, pv = session.run(None, feeds)
    want, want_k, want_v = numpy_reference.attention(
        q, k, v, *(past or (None, None)), mask, case.heads, case.kv_heads, case.causal, case.window, case.global_tokens
    )
    assert np.abs(out - want).max() < 2e-6
    np.testing.assert_array_equal(pk, want_k)
    np.testing.assert_array_equal(pv, want_v)


def test_functions_pass_the_onnx_checker():
    case = Case(2, 5, 3, 4, 2, 8, causal=True, window=2)
    model = single_node_model(case, has_mask=True)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version >= 10
    assert {(f.name, f.overload) for f in model.functions} >= {(OP_TYPE, "past_mask"), ("AttentionCore", "")}


def test_every_overload_has_a_body_using_standard_ops_only():
    protos = function_protos()
    plain = ["", "mask", "past", "past_mask"]
    assert sorted(p.overload for p in protos if p.name == OP_TYPE) == sorted(
        plain + ["_".join(filter(None, ("hierarchical", o))) for o in plain]
    )
    for proto in protos:
        for node in proto.node:
            assert node.domain in ("", DOMAIN), node.domain
            if node.domain == DOMAIN:  # only calls into the model-local helpers
                assert node.op_type in {p.name for p in protos if p.name != OP_TYPE}


def test_models_without_hierarchical_nodes_carry_none_of_its_functions():
    model = single_node_model(Case(2, 5, 3, 4, 2, 8, causal=True, window=2), has_mask=True)
    names = {(f.name, f.overload) for f in model.functions}
    assert not any("Hierarchical" in name or "hierarchical" in overload for name, overload in names)
    assert all(a.name != "block" for a in model.graph.node[0].attribute)


def test_attach_functions_is_idempotent():
    case = Case(1, 4, 0, 2, 2, 4, causal=True)
    model = ir.serde.deserialize_model(single_node_model(case, has_mask=False))
    before = len(model.functions)
    assert attach_functions(model) == 1
    assert len(model.functions) == before
