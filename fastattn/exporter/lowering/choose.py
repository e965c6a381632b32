"""Choose each attention node's kernel by measuring the candidates on the target provider.

Nodes with equal signatures (attributes, optional inputs, head sizes) share one
measurement. Per node the fastest candidate that matches the function body wins, for
prefill and for decode separately; when they differ the node gets a switch on sequence
length (see :mod:`.apply`). A provider not installed here cannot be measured: the
choice then follows the target's static preference and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import onnx_ir as ir

from fastattn.errors import ExportError, ProviderError
from fastattn.exporter.capture import module_path
from fastattn.exporter.lowering.apply import Choice
from fastattn.exporter.lowering.base import AttentionSite, LoweringRule
from fastattn.exporter.lowering.gqa import GQA
from fastattn.exporter.lowering.measure import ShapeCase, measure, profile_for
from fastattn.exporter.lowering.portable import PORTABLE
from fastattn.exporter.lowering.registry import by_name, candidates, rules
from fastattn.exporter.lowering.target import Target
from fastattn.models.config import RopeScaling
from fastattn.runtime.providers import resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastDecode:
    """The ``--kv-buffer`` decode path: unguarded GQA everywhere, rotary folded into it."""

    rope_theta: float
    head_size: int
    max_positions: int  # rows of GQA's cos/sin tables: the longest sequence the export takes
    rope_scaling: RopeScaling | None = None


@dataclass(frozen=True)
class LoweringOptions:
    target: Target = Target.CPU
    profile: tuple[ShapeCase, ...] = ()  # empty: defaults per kind of node (see measure.profile_for)
    only: str | None = None  # force this rule wherever it applies (tests, --lowering)
    repeats: int = 10
    threads: int | None = None
    fast_decode: FastDecode | None = None


def find_sites(model: ir.Model) -> dict[str, AttentionSite]:
    return {n.name: AttentionSite.from_node(n, module_path(n)) for n in model.graph if AttentionSite.is_attention(n)}


def plan(model: ir.Model, options: LoweringOptions) -> tuple[dict[str, Choice], dict[str, AttentionSite]]:
    """A :class:`Choice` per attention node of ``model`` for ``options.target``."""
    sites = find_sites(model)
    opset = model.opset_imports.get("", 18)
    chosen: dict[tuple, Choice] = {}
    result = {}
    for name, site in sites.items():
        signature = site.signature()
        if signature not in chosen:
            chosen[signature] = _choose(site, options, opset)
            log.info("%s: %s", site.layer, chosen[signature].label)
        result[name] = chosen[signature]
    return result, sites


def _choose(site: AttentionSite, options: LoweringOptions, opset: int) -> Choice:
    if options.fast_decode is not None:
        match = GQA.check(site)
        if not match:
            raise ExportError(f"--kv-buffer lowers every attention to GroupQueryAttention, but {site.layer}: "
                              f"{match.reason}", "export without --kv-buffer")  # fmt: skip
        return Choice(GQA, guarded=False)
    applicable: list[LoweringRule] = []
    rejected: dict[str, str] = {}
    pool = candidates(options.target)
    for rule in rules():
        if rule not in pool:
            rejected[rule.name] = f"emits ops the {options.target.value} target's provider does not run"
    if options.only:
        pool = [PORTABLE, by_name(options.only)]
    for rule in pool:
        if rule is PORTABLE:
            continue
        match = rule.check(site)
        if match:
            applicable.append(rule)
        else:
            rejected[rule.name] = match.reason
    if not applicable:
        return Choice(PORTABLE, rejected=rejected)
    if options.only:
        return Choice(applicable[0], rejected=rejected)
    try:
        resolve([options.target.provider])
    except ProviderError as e:
        rejected["measurement"] = f"not measured ({e.what}); static preference"
        return Choice(applicable[0], rejected=rejected)
    cases = profile_for(site, options.profile)
    timings: dict[str, dict[str, float]] = {}
    for m in measure(site, [PORTABLE, *applicable], cases, options.target.provider, opset, options.repeats,
                     options.threads):  # fmt: skip
        if m.ms is None:
            rejected[m.rule] = m.reason
        else:
            timings.setdefault(m.case, {})[m.rule] = round(m.ms, 4)
    return _fastest(timings, rejected, cases)


# What a decode switch costs per layer and call beyond the one-node timings: the If, and the
# decode rule's own ops, which one-node models do not show. Measured on 6-layer d=512 int4
# decoders (ORT 1.32 CPU, 2 threads, alternating processes): onnx-attention timed 12.7 us
# faster than mha at decode alone, yet the switched model decoded 3.6 us per layer-call
# slower than mha-only (1335-1371 vs 1397-1440 tokens/s); in a second export it timed
# 23.5 us faster alone and the switched model was 8.9 us slower (1309-1337 vs 1394-1452).
SWITCH_COST_MS = 0.035


def _fastest(timings: dict[str, dict[str, float]], rejected: dict[str, str], cases: Sequence[ShapeCase]) -> Choice:
    """Per case the fastest rule valid in every case; decode gets its own rule when it differs
    by more than a switch costs."""
    valid = set.intersection(*(set(t) for t in timings.values())) - set(rejected)
    best = {case: min(valid, key=lambda r: timings[case][r]) for case in timings}
    decode = best.get("decode")
    main = best.get("prefill") or min(valid, key=lambda r: sum(timings[c][r] for c in timings))
    if decode and decode != main and timings["decode"][main] - timings["decode"][decode] < SWITCH_COST_MS:
        decode = main
    return Choice(by_name(main), by_name(decode) if decode and decode != main else None, timings, rejected)
