"""Check a lowering rule against the portable function body, on the attention grid's shapes and beyond:
padding patterns the grid's random mask does not make, a probe of which side of a rule's guard
ran, and multi-step decoding through an empty cache."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from fastattn.exporter.lowering import apply
from fastattn.exporter.lowering.apply import Choice, lower
from fastattn.exporter.lowering.base import AttentionSite, Builder, LoweringRule, MatchResult
from fastattn.exporter.lowering.measure import ShapeCase, feeds_for, single_site_model
from fastattn.exporter.lowering.portable import PORTABLE
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


OUTPUT_TOL, PRESENT_TOL = 1e-5, 1e-6


@dataclass(frozen=True)
class Padded(Case):
    """A grid case whose key mask follows a pattern: "none" (all ones), "right", "left" or the grid's "random"."""

    padding: str = "random"

    def __str__(self) -> str:
        return f"{super().__str__()}-{self.padding}" if self.masked else super().__str__()

    def arrays(self, seed: int = 0):
        q, k, v, past, mask = super().arrays(seed)
        if self.masked and self.padding != "random":
            mask = np.ones((self.batch, self.past + self.seq), np.int64)
            prompt = self.past or self.seq  # the padded prompt: the cache, or the new tokens of a prefill
            for row in range(self.batch):
                pad = 1 + 3 * row
                if self.padding == "right":
                    mask[row, prompt - pad : prompt] = 0
                elif self.padding == "left":
                    mask[row, :pad] = 0
        return q, k, v, past, mask


def assert_matches(rule: LoweringRule, case: Case) -> dict[str, float]:
    errors = lowered_vs_function(rule, case)
    assert isinstance(errors, dict), f"{rule.name} refused {case}: {errors.reason}"
    assert errors["output"] < OUTPUT_TOL, errors
    assert errors["present_key"] < PRESENT_TOL and errors["present_value"] < PRESENT_TOL, errors
    return errors


class Marked(LoweringRule):
    """Another rule with every output element replaced by :data:`MARK`: shows which branch of an If ran."""

    MARK = 7.0

    def __init__(self, inner: LoweringRule):
        self.inner = inner
        self.name = f"marked-{inner.name}"

    def check(self, site):
        return self.inner.check(site)

    def rewrite(self, site: AttentionSite, b: Builder):
        output, present_key, present_value = self.inner.rewrite(site, b)
        return b.Add(b.Mul(output, b.const(0.0, "float32")), b.const(self.MARK, "float32")), present_key, present_value


def guard_passes(rule: LoweringRule, case: Case, monkeypatch) -> bool:
    """Whether the lowered node ran ``rule`` (True) or the portable fallback behind its guard (False)."""
    site, model = site_and_model(case, has_mask=case.masked)
    assert rule.check(site), rule.check(site).reason
    monkeypatch.setattr(apply, "PORTABLE", Marked(PORTABLE))
    lower(model, {site.node.name: Choice(rule)}, {site.node.name: site})
    output = run(model, feeds(case))[0]
    return not np.all(output == Marked.MARK)


def decode_chain(rule: LoweringRule, case: Case, steps: int = 3) -> float:
    """Prefill ``case.seq`` tokens into an empty cache (P = 0) through a model with past inputs, then
    decode ``steps`` tokens feeding presents back; the largest output/present error against the body."""
    with_cache = Case(case.batch, 1, 1, case.heads, case.kv_heads, case.head_size, case.causal, case.window,
                      case.global_tokens)  # fmt: skip
    site, _ = site_and_model(with_cache, has_mask=False)
    portable = single_site_model(site, 20)
    lowered = single_site_model(site, 20)
    node = next(n for n in lowered.graph if AttentionSite.is_attention(n))
    lowered_site = AttentionSite.from_node(node)
    lower(lowered, {node.name: Choice(rule)}, {node.name: lowered_site})
    assert not any(AttentionSite.is_attention(n) for n in lowered.graph)
    inputs = feeds_for(site, ShapeCase("prefill", case.batch, case.seq, past=0))
    worst = 0.0
    for step in range(steps + 1):
        want, got = run(portable, inputs), run(lowered, inputs)
        worst = max([worst] + [float(np.abs(g - w).max()) for g, w in zip(got, want)])
        fresh = feeds_for(site, ShapeCase("decode", case.batch, 1, past=0), seed=step + 1)
        inputs = {"query": fresh["query"], "key": fresh["key"], "value": fresh["value"],
                  "past_key": want[1], "past_value": want[2]}  # fmt: skip
    return worst
