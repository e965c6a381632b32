"""``fastattn package OUT --ort``: edge packages for an existing export, validated, written in place."""

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
@threads_option
@json_option
@verbose_option
@command
def package_command(output, ort_format, threads, as_json) -> None:
    """Add edge packages to the export in OUTPUT (validated; the export is replaced as a whole)."""
    from fastattn.exporter.pipeline import repackage  # noqa: PLC0415

    if not ort_format:
        raise InputError("no package named", "pass --ort")
    with progress("packaging", quiet=as_json) as step:
        package = repackage(output, ort=True, threads=threads, progress=step).manifest.ort_format
    if as_json:
        print_json(schema.dump(package))
        return
    sizes = ", ".join(f"{g.file} {g.bytes / 1e6:.2f} MB ({g.ort_nodes} nodes; {g.onnx_file} {g.nodes})"
                      for g in package.graphs)  # fmt: skip
    out.print(f"wrote {sizes}; {package.config}: {package.operators} operators "
              f"({package.typed_config}: {package.typed_operators} typed); validated against the .onnx",
              highlight=False)  # fmt: skip
