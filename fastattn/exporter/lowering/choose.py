"""Choose each attention node's kernel by measuring the candidates on the target provider.

Nodes with equal signatures (attributes, optional inputs, head sizes) share one
measurement. Per node the fastest candidate that matches the function body wins, for
prefill and for decode separately; when they differ the node gets a switch on sequence
length (see :mod:`.apply`). A provider not installed here is measured by a worker in its own
environment (OpenVINO EP, :mod:`fastattn.runtime.timing`); with neither, the choice follows
the target's static preference and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import onnx_ir as ir

from fastattn.errors import ExportError, InputError, ProviderError
from fastattn.exporter.lowering.apply import Choice
from fastattn.exporter.lowering.base import AttentionSite, LoweringRule
from fastattn.exporter.lowering.gqa import GQA
from fastattn.exporter.lowering.measure import ShapeCase, measure, profile_for
from fastattn.exporter.lowering.portable import PORTABLE
from fastattn.exporter.lowering.registry import by_name, candidates, for_target, rules
from fastattn.families.base import FastDecode
from fastattn.onnx_names import module_path
from fastattn.targets import Target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pin:
    """A kernel fixed in advance instead of measured: for one layer (a lowering plan), or for every
    layer (``--lowering``, ``--kv-buffer``). ``strict``: the rule must apply, else the export fails;
    otherwise a layer it cannot take stays portable."""

    rule: str
    decode: str | None = None  # the kernel of single-token steps, when it differs
    guarded: bool = True  # False: the rule runs without its runtime guard (the export promises its inputs)
    strict: bool = False


@dataclass(frozen=True)
class LoweringOptions:
    target: Target = Target.CPU
    profile: tuple[ShapeCase, ...] = ()  # empty: defaults per kind of node (see measure.profile_for)
    only: str | None = None  # --lowering: this rule wherever it applies, unmeasured
    repeats: int = 10
    threads: int | None = None
    fast_decode: FastDecode | None = None  # --kv-buffer: GQA everywhere, unguarded, rotary folded in
    pins: Mapping[str, Pin] = field(default_factory=dict)  # layer -> pinned kernel (--lowering-plan)

    def __post_init__(self) -> None:
        for pin in [*self.pins.values(), *([self.pin_all] if self.pin_all else [])]:
            for name in (pin.rule, pin.decode):
                if name is not None:
                    for_target(name, self.target)  # an unknown rule, or one the target cannot run: one line now

    @property
    def pin_all(self) -> Pin | None:
        """The kernel every layer gets, if one was asked for."""
        if self.fast_decode is not None:
            return Pin(GQA.name, guarded=False, strict=True)
        return Pin(self.only) if self.only else None


def find_sites(model: ir.Model) -> dict[str, AttentionSite]:
    return {n.name: AttentionSite.from_node(n, module_path(n)) for n in model.graph if AttentionSite.is_attention(n)}


def plan(model: ir.Model, options: LoweringOptions) -> tuple[dict[str, Choice], dict[str, AttentionSite]]:
    """A :class:`Choice` per attention node of ``model`` for ``options.target``."""
    sites = find_sites(model)
    opset = model.opset_imports.get("", 18)
    chosen: dict[tuple, Choice] = {}
    result = {}
    for name, site in sites.items():
        signature = (site.signature(), options.pins.get(site.layer))
        if signature not in chosen:
            chosen[signature] = _choose(site, options, opset)
            log.info("%s: %s", site.layer, chosen[signature].label)
        result[name] = chosen[signature]
    return result, sites


def _choose(site: AttentionSite, options: LoweringOptions, opset: int) -> Choice:
    pin = options.pins.get(site.layer) or options.pin_all
    if pin is not None:
        return _pinned(site, pin, options)
    applicable: list[LoweringRule] = []
    rejected: dict[str, str] = {}
    pool = candidates(options.target)
    for rule in rules():
        if rule not in pool:
            rejected[rule.name] = f"emits ops the {options.target.value} target's provider does not run"
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
    spec, cases = options.target.spec, profile_for(site, options.profile)
    try:  # on the target's provider: here, by a worker in the provider's own environment, or in Node
        if spec.web:  # onnxruntime-web
            from fastattn.exporter.lowering.measure_web import measure as measure_web  # noqa: PLC0415

            measured = measure_web(site, [PORTABLE, *applicable], cases, options.target.value, opset,
                                   options.repeats, options.threads)  # fmt: skip
        else:
            measured = measure(site, [PORTABLE, *applicable], cases, spec.provider, opset, options.repeats,
                               options.threads, inline=not spec.model_functions)  # fmt: skip
    except ProviderError as e:
        rejected["measurement"] = f"not measured ({e.what}); static preference"
        return Choice(applicable[0], rejected=rejected)
    timings: dict[str, dict[str, float]] = {}
    spreads: dict[str, dict[str, float]] = {}
    for m in measured:
        if m.ms is None:
            rejected[m.rule] = m.reason
        else:
            timings.setdefault(m.case, {})[m.rule] = round(m.ms, 4)
            spreads.setdefault(m.case, {})[m.rule] = round(m.spread, 4)
    return _fastest(timings, rejected, cases, spreads, switch=spec.decode_switch)


def _pinned(site: AttentionSite, pin: Pin, options: LoweringOptions) -> Choice:
    """The pinned kernel(s) of ``site``, checked: a rule that cannot take it fails a strict pin
    (one line) and leaves the layer portable otherwise."""
    chosen = []
    for name in (pin.rule, pin.decode or pin.rule):
        rule = for_target(name, options.target)
        match = rule.check(site)
        if not match and pin.strict:
            why = "--kv-buffer lowers every attention to GroupQueryAttention" if options.fast_decode else \
                f"the lowering plan pins {rule.name}"
            raise ExportError(f"{why}, but {site.layer}: {match.reason}",
                              "export without it, or pin another rule")  # fmt: skip
        chosen.append(rule if match else PORTABLE)
    rejected = {rule: why for rule, why in _refusals(site, pin, options.target).items()}
    rejected["measurement"] = "pinned: " + ("--kv-buffer" if options.fast_decode else "given, not measured")
    decode = chosen[1] if chosen[1] is not chosen[0] else None
    return Choice(chosen[0], decode, rejected=rejected, guarded=pin.guarded)


def _refusals(site: AttentionSite, pin: Pin, target: Target) -> dict[str, str]:
    """Why the pinned rules, where they cannot take ``site``, do not."""
    out = {}
    for name in {pin.rule, pin.decode or pin.rule}:
        match = for_target(name, target).check(site)
        if not match:
            out[name] = match.reason
    return out


def plan_file(choices: Mapping[str, Mapping[str, Choice]], layers: Mapping[str, str]) -> dict:
    """A lowering plan (``lowering_plan.json``) from chosen kernels: graph -> layer -> pin.
    ``layers`` maps each node name to its layer (module path)."""
    out: dict[str, dict[str, dict]] = {}
    for graph, per_node in choices.items():
        for node, choice in per_node.items():
            pin = {"rule": choice.rule.name}
            if choice.decode_rule is not None:
                pin["decode"] = choice.decode_rule.name
            if not choice.guarded:
                pin["guarded"] = False
            out.setdefault(graph, {})[layers.get(node, node)] = pin
    return out


def read_plan(data: object, source: str) -> dict[str, dict[str, Pin]]:
    """Pins per graph and layer from a lowering plan's ``graphs`` (see :func:`plan_file`)."""
    try:
        graphs = data["graphs"]  # type: ignore[index]
        return {graph: {layer: Pin(p["rule"], p.get("decode"), bool(p.get("guarded", True)), strict=True)
                        for layer, p in layers.items()} for graph, layers in graphs.items()}  # fmt: skip
    except (TypeError, KeyError, AttributeError) as e:
        raise InputError(f"{source} is not a lowering plan ({type(e).__name__}: {e})",
                         "pass the lowering_plan.json an earlier export wrote") from e


# What a decode switch costs per layer and call beyond the one-node timings: the If, and the
# decode rule's own ops, which one-node models do not show. Measured on 6-layer d=512 int4
# decoders (ORT 1.32 CPU, 2 threads, alternating processes): onnx-attention timed 12.7 us
# faster than mha at decode alone, yet the switched model decoded 3.6 us per layer-call
# slower than mha-only (1335-1371 vs 1397-1440 tokens/s); in a second export it timed
# 23.5 us faster alone and the switched model was 8.9 us slower (1309-1337 vs 1394-1452).
SWITCH_COST_MS = 0.035


def _fastest(timings: dict[str, dict[str, float]], rejected: dict[str, str], cases: Sequence[ShapeCase],
             spreads: dict[str, dict[str, float]] | None = None, switch: bool = True) -> Choice:  # fmt: skip
    """The kernel per shape from measured timings, reproducibly (the manifest records timings, spreads
    and refusals, so the choice can be recomputed from it): the default is the first valid rule in
    the registry's order (the static preference); another replaces it only when it is faster by
    more than both figures move (their spreads), the fastest such rule wins, ties go to the
    registry's order. Decode gets its own rule only when that gain also beats a switch's cost, and
    never without ``switch`` (a provider that cannot load the switch's If)."""
    valid = set.intersection(*(set(t) for t in timings.values())) - set(rejected)
    order = {rule.name: i for i, rule in enumerate(rules())}
    spreads = spreads or {}
    default = next((r.name for r in rules() if r.name in valid and r is not PORTABLE), PORTABLE.name)

    def pick(case_times: dict[str, float], case_spreads: dict[str, float], margin: float = 0.0) -> str:
        base = case_times[default] - case_spreads.get(default, 0.0) - margin
        wins = [r for r in valid if case_times[r] + case_spreads.get(r, 0.0) < base]
        return min(wins, key=lambda r: (case_times[r], order.get(r, len(order)))) if wins else default

    def total(table: dict[str, dict[str, float]]) -> dict[str, float]:
        return {r: sum(table.get(c, {}).get(r, 0.0) for c in timings) for r in valid}

    main = pick(timings["prefill"], spreads.get("prefill", {})) if "prefill" in timings else \
        pick(total(timings), total(spreads))
    decode = None
    if "decode" in timings and switch:
        times, spread = timings["decode"], spreads.get("decode", {})
        best = min(valid, key=lambda r: (times[r], order.get(r, len(order))))
        gain = times[main] - times[best] - spread.get(main, 0.0) - spread.get(best, 0.0)
        decode = best if best != main and gain > SWITCH_COST_MS else None
    return Choice(by_name(main), by_name(decode) if decode else None, timings, rejected, spreads=spreads)
