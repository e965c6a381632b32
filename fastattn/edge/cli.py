"""``fastattn package OUT --ort``: edge packages for an existing export. Registered by :mod:`fastattn.cli`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("package")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--ort", "ort_format", is_flag=True,
              help="Write <graph>.ort + required_operators.config (minimal ONNX Runtime builds), validated.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads used for validation.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug, with tracebacks).")
def package_command(output, ort_format, threads, verbose) -> None:
    """Add edge packages to the export in OUTPUT (written beside its files, the manifest last)."""
    from fastattn.cli import _handle_errors

    _handle_errors(_package)(output, ort_format, threads, verbose)


def _package(output: Path, ort_format: bool, threads: int | None, verbose: int) -> None:
    from fastattn.cli import _logging, err, out
    from fastattn.edge.ort_format import package_existing
    from fastattn.errors import InputError

    _logging(verbose)
    if not ort_format:
        raise InputError("no package named", "pass --ort")
    with err.status("packaging") as status:
        package = package_existing(output, threads, progress=lambda message: status.update(message))
    sizes = ", ".join(f"{g.file} {g.bytes / 1e6:.2f} MB ({g.ort_nodes} nodes; {g.onnx_file} {g.nodes})"
                      for g in package.graphs)  # fmt: skip
    out.print(f"wrote {sizes}; {package.config}: {package.operators} operators "
              f"({package.typed_config}: {package.typed_operators} typed); validated against the .onnx")  # fmt: skip
