"""Check a lowering rule against the portable function body, on the attention grid's shapes."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from fastattn.exporter.lowering.apply import Choice, lower
from fastattn.exporter.lowering.base import AttentionSite, LoweringRule, MatchResult
from tests import numpy_reference
from tests.attention.grid import Case
from tests.attention.single_node import single_node_model


def site_and_model(case: Case, has_mask: bool, opset: int = 20) -> tuple[AttentionSite, ir.Model]:
    model = ir.serde.deserialize_model(single_node_model(case, has_mask, opset))
    node = next(n for n in model.graph if AttentionSite.is_attention(n))
    return AttentionSite.from_node(node), model


def feeds(case: Case) -> dict[str, np.ndarray]:
    q, k, v, past, mask = case.arrays()
    out = {"query": q, "key": k, "value": v}
    if past is not None:
        out.update(past_key=past[0], past_value=past[1])
    if mask is not None:
        out["key_mask"] = mask
    return out


def run(model: ir.Model, inputs: dict[str, np.ndarray], providers=("CPUExecutionProvider",)) -> list[np.ndarray]:
    proto = ir.serde.serialize_model(model).SerializeToString()
    return ort.InferenceSession(proto, providers=list(providers)).run(None, inputs)


def lowered_vs_function(rule: LoweringRule, case: Case, opset: int = 20) -> MatchResult | dict[str, float]:
    """The rule's check result if it refuses the case; else the max abs error per output against the
    function body, over the queries that see at least one key (all outputs must be finite)."""
    site, model = site_and_model(case, has_mask=case.masked, opset=opset)
    match = rule.check(site)
    if not match:
        return match
    inputs = feeds(case)
    want = run(model, inputs)
    lowered = ir.serde.deserialize_model(ir.serde.serialize_model(model))
    lowered_site = AttentionSite.from_node(next(n for n in lowered.graph if AttentionSite.is_attention(n)))
    lower(lowered, {lowered_site.node.name: Choice(rule)}, {lowered_site.node.name: lowered_site})
    assert not any(AttentionSite.is_attention(n) for n in lowered.graph), "the node was not replaced"
    got = run(lowered, inputs)
    rows = numpy_reference.visible_rows(case.batch, case.seq, case.past, inputs.get("key_mask"), case.causal,
                                        case.window, case.global_tokens)  # fmt: skip
    assert all(np.isfinite(g).all() for g in got), "a lowering must never emit NaN or inf (it poisons the cache)"
    errors = {"output": float(np.abs(got[0] - want[0])[rows].max(initial=0.0))}
    for name, g, w in zip(("present_key", "present_value"), got[1:], want[1:]):
        errors[name] = float(np.abs(g - w).max(initial=0.0))
    return errors
