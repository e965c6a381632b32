"""What a command prints about an export: compact tables on a terminal, or one JSON document."""

from __future__ import annotations

from rich.table import Table

from fastattn.cli.app import out, print_json, sanitize


def export_json(result) -> dict:
    """An :class:`~fastattn.exporter.state.ExportResult` as machine-readable data."""
    return {"output": str(result.output), "timings": result.timings, "manifest": result.manifest.to_dict()}


def print_export(result, as_json: bool = False) -> None:
    """Attention layers and validation of an export, compactly; the full story is in report.md."""
    if as_json:
        print_json(export_json(result))
        return
    manifest = result.manifest
    layers = Table("graph", "layer", "kind", "heads/kv", "window", "global", "kernel",
                   title=f"attention (target {manifest.target})")  # fmt: skip
    for a in manifest.attention:
        window = str(a.window or (f"block {a.block}" if a.block else "-"))
        layers.add_row(a.graph, a.layer, a.kind, f"{a.num_heads}/{a.kv_num_heads}", window,
                       str(a.global_tokens or "-"), a.lowering)  # fmt: skip
    out.print(layers)
    print_validation(result.validation)
    for graph, counts in manifest.fusions.items():
        fired = ", ".join(f"{name} {n}" for name, n in counts.items() if n) or "none"
        out.print(f"fusions in {graph}: {fired}")
    if manifest.quantization:
        print_quantization(manifest.quantization)
    files = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(result.output.glob("*.onnx*")))
    out.print(f"[bold green]exported[/] {sanitize(str(result.output))} ({files}) in {result.timings['total']:.1f} s; "
              f"report: {sanitize(str(result.output / 'report.md'))}", highlight=False)  # fmt: skip


def print_validation(validation) -> None:
    quantized = not validation.tolerance.elementwise  # judged by cosines per row, not element-wise
    extra = ("row cosine",) if quantized else ()
    cases = Table("graph", "case", "worst output", "max abs", "max rel", "cosine", *extra, "", title="validation vs PyTorch")
    for c in validation.cases:
        least = (lambda o: -(o.row_cosine if o.row_cosine is not None else o.cosine)) if quantized else (lambda o: o.max_rel)
        worst = max(c.outputs, key=lambda o: (not o.passed, least(o)))
        mark = "[green]ok[/]" if c.passed else "[red]FAIL[/]"
        row = "-" if worst.row_cosine is None else f"{worst.row_cosine:.6f}"
        cases.add_row(c.case.graph, c.case.name, worst.name, f"{worst.max_abs:.2e}", f"{worst.max_rel:.2e}",
                      f"{worst.cosine:.7f}", *((row,) if quantized else ()), mark)  # fmt: skip
    out.print(cases)


def print_quantization(q) -> None:
    table = Table("model", "perplexity", "accuracy", "top-1 agreement", "cosine",
                  title=f"{q.mode} accuracy on {q.data} (vs the float ONNX model)")  # fmt: skip
    for name, f in q.figures.items():
        cells = ["-" if v is None else f"{v:.6g}" for v in (f.perplexity, f.accuracy, f.agreement, f.cosine)]
        if f.cosine_min is not None:  # sentence embeddings: mean per-sample cosine (least)
            cells[-1] += f" ({f.cosine_min:.6g})"
        table.add_row(name, *cells)
    out.print(table)
    kept = f", {len(q.kept)} kept in float" if q.kept else ""
    out.print(f"{q.mode}: {len(q.quantized)} weights quantized{kept}; "
              f"{q.size_before / 1e6:.1f} MB -> {q.size_after / 1e6:.1f} MB; gate passed")  # fmt: skip
