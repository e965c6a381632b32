"""``fastattn package OUT --ort | --optimum``: packages for an existing export, validated, written in place."""

from __future__ import annotations

from pathlib import Path

import click

from fastattn.cli.app import command, json_option, out, print_json, progress, threads_option, verbose_option
from fastattn.errors import InputError
from fastattn.runtime import schema


@click.command("package")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--ort", "ort_format", is_flag=True,
              help="Write <graph>.ort + required_operators.config (minimal ONNX Runtime builds), validated.")
@click.option("--optimum", "optimum_layout", is_flag=True,
              help="Hugging Face encoder-decoders: write encoder_model.onnx + decoder_model_merged.onnx, so "
                   "optimum.onnxruntime.ORTModelForSeq2SeqLM opens OUTPUT; checked against the export's graphs.")
@threads_option
@json_option
@verbose_option
@command
def package_command(output, ort_format, optimum_layout, threads, as_json) -> None:
    """Add packages to the export in OUTPUT (validated; the export is replaced as a whole)."""
    from fastattn.exporter.pipeline import repackage  # noqa: PLC0415

    if not ort_format and not optimum_layout:
        raise InputError("no package named", "pass --ort or --optimum")
    with progress("packaging", quiet=as_json) as step:
        manifest = repackage(output, ort=ort_format, threads=threads, progress=step, optimum=optimum_layout).manifest
    if as_json:
        dumps = {"ort_format": manifest.ort_format if ort_format else None,
                 "optimum": manifest.optimum if optimum_layout else None}
        chosen = {k: schema.dump(v) for k, v in dumps.items() if v is not None}
        print_json(next(iter(chosen.values())) if len(chosen) == 1 else chosen)
        return
    if optimum_layout and manifest.optimum is not None:
        check = manifest.optimum.validation
        worst = max((o.max_abs for c in check.cases for o in c.outputs), default=0.0) if check else float("nan")
        out.print(f"wrote {', '.join(manifest.optimum.files)} ({manifest.optimum.loader} opens {output}); "
                  f"max abs difference from the export's own graphs {worst:.2g}", highlight=False)  # fmt: skip
    if not ort_format:
        return
    package = manifest.ort_format
    sizes = ", ".join(f"{g.file} {g.bytes / 1e6:.2f} MB ({g.ort_nodes} nodes; {g.onnx_file} {g.nodes})"
                      for g in package.graphs)  # fmt: skip
    out.print(f"wrote {sizes}; {package.config}: {package.operators} operators "
              f"({package.typed_config}: {package.typed_operators} typed); validated against the .onnx",
              highlight=False)  # fmt: skip
