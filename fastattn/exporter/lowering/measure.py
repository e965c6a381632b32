"""Measure lowering candidates of one attention node on the target provider.

Each candidate is lowered into a model holding only that node, timed on ONNX Runtime at
each shape of the profile (median of repeated runs after warm-up), and checked against
the portable function body on the same inputs: a candidate that disagrees is rejected.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from fastattn.attention.onnx_function import DOMAIN, OP_TYPE, attach_functions
from fastattn.exporter.lowering.apply import Choice, lower
from fastattn.exporter.lowering.base import AttentionSite, LoweringRule
from fastattn.exporter.lowering.portable import PORTABLE
from fastattn.runtime.providers import resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShapeCase:
    """One shape to measure at: batch, new tokens, cached tokens (and key length of cross-attention)."""

    name: str
    batch: int
    sequence: int
    past: int = 0
    keys: int = 0  # cross-attention: the key length; 0 = self-attention


DEFAULT_PROFILE = (ShapeCase("prefill", 1, 512), ShapeCase("decode", 1, 1, past=512))
ENCODER_PROFILE = (ShapeCase("encode", 1, 512),)
CROSS_PROFILE = (ShapeCase("decode", 1, 1, keys=512), ShapeCase("prefill", 1, 64, keys=512))


def profile_for(site: AttentionSite, profile: Sequence[ShapeCase] | None) -> Sequence[ShapeCase]:
    """The shapes a site is measured at: the user's, or a default by kind of site."""
    if profile:
        cases = list(profile)
    elif site.past_key is not None:
        cases = list(DEFAULT_PROFILE)
    elif _is_cross(site):
        cases = list(CROSS_PROFILE)
    else:
        cases = list(ENCODER_PROFILE)
    if site.past_key is None:  # no cache: nothing is decoded step by step
        cases = [ShapeCase(c.name, c.batch, c.sequence + c.past, 0, c.keys) for c in cases]
    return cases


def _is_cross(site: AttentionSite) -> bool:
    q, k = site.query.shape, site.key.shape
    return q is not None and k is not None and len(q) == len(k) == 3 and q[1] != k[1] and not site.spec.causal


def single_site_model(site: AttentionSite, opset: int) -> ir.Model:
    """A model whose only node is a copy of ``site`` (same attributes and optional inputs)."""
    hq, hkv = site.spec.num_heads, site.spec.kv_num_heads
    d, dv = site.head_size or 64, site.value_head_size or site.head_size or 64
    f32 = ir.TensorType(ir.DataType.FLOAT)
    keys = "T" if _is_cross(site) else "S"  # self-attention: queries and keys share one dim, as exported
    specs = [("query", f32, ["B", "S", hq * d]), ("key", f32, ["B", keys, hkv * d]), ("value", f32, ["B", keys, hkv * dv])]
    if site.past_key is not None:
        specs += [("past_key", f32, ["B", hkv, "P", d]), ("past_value", f32, ["B", hkv, "P", dv])]
    if site.key_mask is not None:
        specs.append(("key_mask", ir.TensorType(ir.DataType.INT64), ["B", "L"]))
    inputs = {name: ir.Value(name=name, type=t, shape=ir.Shape(shape)) for name, t, shape in specs}
    node_inputs = [inputs.get(n) for n in ("query", "key", "value", "past_key", "past_value", "key_mask")]
    while node_inputs[-1] is None:
        node_inputs.pop()
    attributes = {name: attr for name, attr in site.node.attributes.items()}
    node = ir.Node(DOMAIN, OP_TYPE, node_inputs, attributes=list(attributes.values()), num_outputs=3)
    for value, name in zip(node.outputs, ("output", "present_key", "present_value")):
        value.name, value.type = name, f32
    graph = ir.Graph(list(inputs.values()), list(node.outputs), nodes=[node], opset_imports={"": opset})
    model = ir.Model(graph, ir_version=10)
    attach_functions(model)
    return model


def feeds_for(site: AttentionSite, case: ShapeCase, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    hq, hkv = site.spec.num_heads, site.spec.kv_num_heads
    d, dv = site.head_size or 64, site.value_head_size or site.head_size or 64
    keys = case.keys or case.sequence
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    feeds = {"query": f(case.batch, case.sequence, hq * d), "key": f(case.batch, keys, hkv * d),
             "value": f(case.batch, keys, hkv * dv)}  # fmt: skip
    if site.past_key is not None:
        feeds.update(past_key=f(case.batch, hkv, case.past, d), past_value=f(case.batch, hkv, case.past, dv))
    if site.key_mask is not None:
        feeds["key_mask"] = np.ones((case.batch, case.past + keys), np.int64)
    return feeds


@dataclass
class Measurement:
    rule: str
    case: str
    ms: float | None  # None: rejected
    max_abs_error: float | None = None
    reason: str = ""
    spread: float = 0.0  # ms: half the range of the per-round medians (how much the figure moves)


def measure(
    site: AttentionSite,
    rules: Sequence[LoweringRule],
    cases: Sequence[ShapeCase],
    provider: str,
    opset: int,
    repeats: int = 10,
    threads: int | None = None,
) -> list[Measurement]:
    """Time every rule at every case on ``provider``; check each against the portable body."""
    providers = resolve([provider])
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a candidate that fails is recorded as rejected, not printed
    if threads:
        options.intra_op_num_threads = threads
    sessions = {}
    for rule in [PORTABLE, *rules]:
        model = single_site_model(site, opset)
        model_site = AttentionSite.from_node(next(n for n in model.graph if AttentionSite.is_attention(n)))
        lower(model, {model_site.node.name: Choice(rule)}, {model_site.node.name: model_site})
        proto = ir.serde.serialize_model(model).SerializeToString()
        sessions[rule.name] = ort.InferenceSession(proto, options, providers=providers)
    results = []
    for case in cases:
        feeds = feeds_for(site, case)
        reference = sessions[PORTABLE.name].run(None, feeds)
        timed = {}
        for rule in rules:
            try:
                got = sessions[rule.name].run(None, feeds)
            except Exception as e:  # an EP may reject shapes or types at run time
                results.append(Measurement(rule.name, case.name, None, reason=f"failed to run: {e}"[:200]))
                continue
            error = max(float(np.abs(a - b).max()) for a, b in zip(got, reference) if a.size)
            scale = max(float(np.abs(b).max()) for b in reference if b.size)
            if not error <= 1e-4 * max(scale, 1.0):
                results.append(Measurement(rule.name, case.name, None, error, f"differs from the function body by {error:.2e}"))
                continue
            timed[rule.name] = error
        log.info("timing %s at %s (%s) on %s", ", ".join(timed), case.name, _shape(case), provider)
        medians = _interleaved_medians({name: sessions[name] for name in timed}, feeds, repeats)
        results += [Measurement(name, case.name, medians[name][0], error, spread=medians[name][1])
                    for name, error in timed.items()]  # fmt: skip
    return results


ROUNDS = 3


def _shape(case: ShapeCase) -> str:
    return f"{case.batch}x{case.sequence}" + (f"+{case.past}" if case.past else "")


def _interleaved_medians(sessions: dict[str, ort.InferenceSession], feeds: dict,
                         repeats: int) -> dict[str, tuple[float, float]]:  # fmt: skip
    """(median, spread) ms per session over ``ROUNDS`` rounds of ``repeats`` runs, sessions taking turns;
    the spread is half the range of the round medians.

    Rounds alternate the order, and a short pause before each session's runs lets the previous
    session's spinning threads go idle, so no candidate is timed against another's threads.
    """
    per_round: dict[str, list[float]] = {name: [] for name in sessions}
    order = list(sessions)
    for r in range(ROUNDS):
        for name in order if r % 2 == 0 else reversed(order):
            time.sleep(0.02)
            per_round[name].append(_median_ms(sessions[name], feeds, repeats))
    return {name: (statistics.median(v), (max(v) - min(v)) / 2) for name, v in per_round.items()}


def _median_ms(session: ort.InferenceSession, feeds: dict[str, np.ndarray], repeats: int) -> float:
    for _ in range(2):
        session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
