"""``fastattn validate``: compare an existing export with its PyTorch model again."""

from __future__ import annotations

from pathlib import Path

import click

from fastattn.cli.app import command, json_option, out, print_json, progress, threads_option, verbose_option
from fastattn.cli.summary import print_validation


@click.command("validate")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--allow-pickle", is_flag=True, help="Load a pickled nn.Module (runs code from the file).")
@click.option("--code", type=click.Path(path_type=Path), default=None, metavar="FILE.py",
              help="With --allow-pickle: the Python file defining the pickled model's classes.")
@threads_option
@json_option
@verbose_option
@command
def validate_command(model, output, allow_pickle, code, threads, as_json) -> None:
    """Re-run the comparison of the export in OUTPUT against MODEL; exit 3 if it fails."""
    from fastattn.exporter.pipeline import revalidate  # noqa: PLC0415

    with progress("validating", quiet=as_json):
        result = revalidate(model, output, allow_pickle=allow_pickle, threads=threads, code=code)
    if as_json:
        print_json(result.validation.to_dict())
        return
    print_validation(result.validation)
    cases = len(result.validation.cases)
    v = result.validation
    if v.tolerance.elementwise:
        out.print(f"[bold green]passed[/] {cases} cases; worst max rel error {v.worst().max_rel:.2e}")
    else:  # quantized: the gate judged accuracy; validation checked the graph is not broken
        rows = [o.row_cosine for c in v.cases for o in c.outputs if o.row_cosine is not None]
        out.print(f"[bold green]passed[/] {cases} cases; least row cosine {min(rows, default=1.0):.6f}")
