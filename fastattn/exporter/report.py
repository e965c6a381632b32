"""``report.md``: what the user got, in words and tables, made from the manifest.

Names that come from outside (file names, module paths) are shown with control characters
escaped: a raw ESC byte in a model's file name must not reach a terminal through the report.
"""

from __future__ import annotations

import re

from fastattn.runtime import dims
from fastattn.runtime.manifest import Manifest
from fastattn.runtime.records import PlacementRecord, QuantizationRecord, ValidationRecord
from fastattn.targets import Target


def clean(text: object) -> str:
    """``text`` with control characters escaped (``\\x1b``) and table pipes kept out of cells."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text)).replace("|", "\\|")


def _fmt(x: float) -> str:
    return f"{x:.2e}" if isinstance(x, float) else str(x)


def render(manifest: Manifest, timings: dict[str, float] | None = None, notes: list[str] | None = None) -> str:
    lines = [f"# fastattn export: {clean(manifest.source)}", ""]
    lines += [f"- architecture: **{manifest.arch}** (family {manifest.family}), precision **{manifest.precision}**"]
    for graph, opsets in manifest.opsets.items():
        lines.append(f"- opsets of {graph}: " + ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in sorted(opsets.items())))
    if manifest.max_length is not None:
        lines.append(f"- sequences (cache included) of at most {manifest.max_length} tokens")
    if manifest.session.disabled_optimizers:
        lines.append(f"- sessions: ONNX Runtime optimizers {', '.join(manifest.session.disabled_optimizers)} "
                     f"are turned off (the runtime does it; other apps should too): {manifest.session.why}")
    if manifest.hf:
        hf = manifest.hf
        start = f", decoder start {hf.decoder_start_token_id}" if hf.decoder_start_token_id is not None else ""
        lines.append(f"- Hugging Face: {hf.model_type} ({hf.architecture or 'no architecture'}), task **{hf.task}**, "
                     f"EOS ids {hf.eos_token_ids or 'none'}, pad id {hf.pad_token_id}{start}; "
                     f"carried files: {', '.join(hf.files) or 'none'}")  # fmt: skip
    if manifest.kv_buffer:
        kv = manifest.kv_buffer
        lines.append(f"- decode path: **--kv-buffer**, rows must be {kv.rows}, sequences at most "
                     f"{kv.max_length} tokens: {kv.why}")  # fmt: skip
    if timings:
        lines.append("- time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    lines += [f"- {clean(note)}" for note in notes or []]
    lines += ["", "## Graphs", ""]
    for g in manifest.graphs:
        lines += [f"### {g.file}", "", "| | name | dtype | shape |", "|---|---|---|---|"]
        for kind, specs in (("in", g.inputs), ("out", g.outputs)):
            lines += [f"| {kind} | {s.name} | {s.dtype} | ({', '.join(map(str, s.shape))}) |" for s in specs]
        if g.cache:
            lines += ["", _cache_line(g)]
        lines.append("")
    lines += ["## Attention", ""]
    if manifest.attention:
        lines += ["| graph | layer | kind | heads | kv heads | causal | window | global | inputs | kernel |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for a in manifest.attention:
            lines.append(
                f"| {a.graph} | {clean(a.layer)} | {a.kind} | {a.num_heads} | {a.kv_num_heads} | {a.causal} | "
                f"{a.window or (f'block {a.block}' if a.block else '-')} | {a.global_tokens or '-'} | "
                f"{a.inputs or 'qkv'} | {a.lowering} |"
            )
    else:
        lines.append("No `fastattn::Attention` node in the model.")
    lines += _lowering(manifest)
    lines += _placement(manifest.placement)
    lines += _quantization(manifest.quantization)
    lines += _ort_format(manifest.ort_format)
    lines += _optimum(manifest)
    lines += ["", *_validation(manifest.validation), "", "## Versions", ""]
    lines += [", ".join(f"{k} {v}" for k, v in manifest.versions.items()), ""]
    return "\n".join(lines)


def _ort_format(package) -> list[str]:
    from fastattn.exporter.ort_format import report_lines  # noqa: PLC0415  (onnxruntime's tools)

    return report_lines(package)


def _optimum(manifest: Manifest) -> list[str]:
    from fastattn.exporter.optimum_layout import report_lines  # noqa: PLC0415

    return report_lines(manifest)


def _lowering(manifest: Manifest) -> list[str]:
    """Why each distinct layer got its kernel: candidate timings per shape, refusals; fusion counts."""
    lines = ["", f"## Lowering for target `{manifest.target}`", ""]
    if manifest.target is Target.PORTABLE:
        return lines + ["Not lowered: every attention runs its `fastattn` function body (exact everywhere, fast nowhere)."]
    seen: set[str] = set()
    for a in manifest.attention:
        key = repr((a.kind, a.num_heads, a.kv_num_heads, a.window, a.global_tokens, a.block, a.inputs, a.timings,
                    a.rejected))  # fmt: skip
        if key in seen:
            continue
        seen.add(key)
        same = [b.layer for b in manifest.attention if b.graph == a.graph and b.lowering == a.lowering
                and (b.kind, b.window, b.block, b.inputs) == (a.kind, a.window, a.block, a.inputs)]  # fmt: skip
        lines.append(f"- **{a.lowering}** for {a.kind} attention ({clean(', '.join(same))})")
        for case, times in a.timings.items():
            ranked = ", ".join(f"{rule} {ms:.3f} ms" for rule, ms in sorted(times.items(), key=lambda kv: kv[1]))
            lines.append(f"  - {case}: {ranked}")
        for rule, reason in a.rejected.items():
            lines.append(f"  - not {rule}: {clean(reason)}")
    for graph, counts in manifest.fusions.items():
        fired = ", ".join(f"{name} {n}" for name, n in counts.items() if n) or "none"
        lines += ["", f"Fusions in {graph}: {fired}."]
    return lines


def _placement(placement: PlacementRecord | None) -> list[str]:
    if placement is None:
        return []
    lines = ["", "## Placement on the target provider", ""]
    if not placement.graphs:
        return lines + [f"Not checked: {clean(placement.checked_with)}."]
    lines.append(f"Checked with {clean(placement.checked_with)}, one run on small inputs with profiling.")
    for graph, p in placement.graphs.items():
        kernels = ", ".join(f"{provider} {n}" for provider, n in p.kernels.items())
        lines += ["", f"- {graph}: kernels run by {kernels}"]
        if p.fallback:
            lines.append(f"  - {len(p.fallback)} node(s) fell back from {p.requested}:")
            lines += [f"    - `{clean(node)}`" for node in p.fallback]
        else:
            lines.append(f"  - every node ran on {p.requested}")
    return lines


def _quantization(q: QuantizationRecord | None) -> list[str]:
    if not q:
        return []
    verdict = "passed" if q.passed else "FAILED"
    lines = ["", f"## Quantization: {q.mode}, accuracy gate {verdict}", ""]
    before, after = q.size_before, q.size_after
    lines.append(f"- size {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB ({after / max(before, 1):.1%})")
    settings = ", ".join(f"{k} {v}" for k, v in q.settings.items())
    lines.append(f"- settings: {settings or 'defaults'}")
    lines.append(f"- evaluated on {clean(q.data)}" + (f"; calibrated on {clean(q.calibration)}" if q.calibration else ""))
    gate = q.gate
    lines.append(f"- gate ({q.task}): perplexity +{gate.max_ppl_increase:.2%} at most, output cosine >= "
                 f"{gate.min_cosine}, accuracy -{gate.max_accuracy_drop:.2%} at most (against the float ONNX model)")
    budget = f"; a failing gate's search for weights to keep in float is bounded at {q.search_budget:.0f} s" \
        if q.search_budget is not None else ""
    lines.append(f"- took {q.seconds:.1f} s{budget}")
    lines += [f"- **fails**: {f}" for f in q.failures] if not q.passed else []
    lines += ["", "| model | perplexity | accuracy | top-1 agreement with float | cosine with float |",
              "|---|---|---|---|---|"]  # fmt: skip
    for name, f in q.figures.items():
        cells = [f"{v:.6g}" if v is not None else "-" for v in (f.perplexity, f.accuracy, f.agreement, f.cosine)]
        if f.cosine_min is not None:  # sentence embeddings: the mean per-sample cosine, then the least
            cells[-1] += f" (least {f.cosine_min:.6g})"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ops = ", ".join(f"{op} {n}" for op, n in sorted(q.ops.items()))
    lines += ["", f"{len(q.quantized)} weight(s) quantized, {len(q.kept)} kept in float. Ops: {ops}."]
    for site in q.kept:
        lines.append(f"- kept `{clean(site.module or site.node)}` ({site.op} {tuple(site.shape)}): {site.reason}")
    if q.sensitivity:
        top = sorted(q.sensitivity.items(), key=lambda kv: -kv[1])[:8]
        lines += ["", "Sensitivity (share of the gate used with only this weight quantized): "
                  + ", ".join(f"`{clean(node)}` {score:.0%}" for node, score in top)]  # fmt: skip
    return lines


def _worst_per_family(outputs: list, quantized: bool = False) -> list[tuple[str, object]]:
    """One row per output family (``present_key_0..N`` -> ``present_key_*``, ``present.N.key`` -> ``present.*.key``):
    its worst member (by max rel; quantized: by least row cosine)."""
    families: dict[str, list] = {}
    for o in outputs:
        families.setdefault(re.sub(r"(?<=[_.])\d+(?=$|\.)", "*", o.name), []).append(o)
    rows = []
    for name, members in families.items():
        failed = [o for o in members if not o.passed]
        worst = max(failed or members, key=lambda o: -_least_cosine(o) if quantized else o.max_rel)
        rows.append((worst.name if failed or len(members) == 1 else name, worst))
    return rows


def _least_cosine(o) -> float:
    return min([o.cosine, *(c for c in (o.row_cosine, o.token_cosine) if c is not None)])


def _opt(x: float | None) -> str:
    return "-" if x is None else f"{x:.5f}"


def _validation(validation: ValidationRecord | None) -> list[str]:
    if not validation:
        return ["## Validation", "", "Not validated."]
    tol = validation.tolerance
    verdict = "PASSED" if validation.passed else "FAILED"
    lines = [
        f"## Validation: {verdict}",
        "",
        f"{validation.against} vs ONNX Runtime, precision {validation.precision}: an output passes when "
        f"{tol.describe()}. max rel = max abs error / max|reference|.",
    ]
    if tol.basis:
        lines += ["", f"Bounds: {tol.basis}"]
    quantized = not tol.elementwise
    lines += [
        "",
        "| graph | case | output | max abs | max rel | mean abs | cosine |"
        + (" row cosine | token cosine | top-1 |" if quantized else "")
        + " |",
        "|---|---|---|---|---|---|---|---|" + ("---|---|---|" if quantized else ""),
    ]
    for case in validation.cases:
        for name, o in _worst_per_family(case.outputs, quantized):
            mark = "ok" if o.passed else f"**FAIL** {o.note}".strip()
            extra = f" {_opt(o.row_cosine)} | {_opt(o.token_cosine)} | {_opt(o.top1)} |" if quantized else ""
            lines.append(
                f"| {case.graph} | {case.case} | {name} | {_fmt(o.max_abs)} | {_fmt(o.max_rel)} | "
                f"{_fmt(o.mean_abs)} | {o.cosine:.7f} |{extra} {mark} |"
            )
    return lines


def _cache_line(graph) -> str:
    """How an app drives the cache of ``graph``, from its specs: what grows, what is capped."""
    specs = {s.name: s for s in graph.inputs}
    caps = sorted({dims.parse(d).cap for p in graph.cache for d in specs[p.past].shape
                   if isinstance(d, str) and dims.parse(d).cap})  # fmt: skip
    line = (f"Cache: start from empty pasts (length 0), feed every `present_*` back as its `past_*` "
            f"({len(graph.cache)} tensors, axis 2) and keep `attention_mask` over every token so far.")
    if caps:
        line += (f" Windowed layers keep at most {', '.join(map(str, caps))} positions "
                 "(`min(past_sequence,K)`): their presents are already trimmed.")
    blocks = sorted({dims.parse(d).block for p in graph.cache for d in specs[p.past].shape
                     if isinstance(d, str) and dims.parse(d).block})  # fmt: skip
    if blocks:
        line += (f" Hierarchical layers (blocks of {', '.join(map(str, blocks))}) keep one summary per complete "
                 "block and the open block's keys (`summarized(past_sequence,B)`): their presents are already "
                 "summarized.")
    return line
