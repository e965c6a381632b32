"""``fastattn optimize`` and ``fastattn quantize``: work on an existing export, validated against it."""

from __future__ import annotations

from pathlib import Path

import click

from fastattn.cli.app import command, force_option, json_option, progress, threads_option, verbose_option
from fastattn.cli.options import lowering_options, quantize_options
from fastattn.cli.summary import print_export
from fastattn.targets import Target


@click.command("optimize")
@click.argument("output", type=click.Path(path_type=Path))
@lowering_options(tuple(t for t in Target if t is not Target.PORTABLE))
@threads_option
@json_option
@verbose_option
@command
def optimize_command(output, lowering, threads, as_json) -> None:
    """Lower a portable export in OUTPUT for a target, validated against its portable graphs."""
    from fastattn.exporter.pipeline import reoptimize  # noqa: PLC0415

    with progress("optimizing", quiet=as_json) as step:
        result = reoptimize(output, Target(lowering.target), lowering.profile, lowering.only,
                            lowering.allow_fusion_shortfall, threads, progress=step,
                            lowering_plan=lowering.lowering_plan)  # fmt: skip
    print_export(result, as_json)


@click.command("quantize")
@click.argument("directory", type=click.Path(path_type=Path))
@quantize_options(mode_required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write the quantized export here [default: replace DIRECTORY].")
@threads_option
@force_option
@json_option
@verbose_option
@command
def quantize_command(directory, quantize, output, threads, force, as_json) -> None:
    """Quantize the float export in DIRECTORY, gated on accuracy against its float graphs."""
    from fastattn.exporter.pipeline import requantize  # noqa: PLC0415
    from fastattn.runtime.manifest import Manifest  # noqa: PLC0415

    target = Target(Manifest.load(directory).target)
    with progress("quantizing", quiet=as_json) as step:
        result = requantize(directory, quantize.step(target), output, force, threads, progress=step)
    print_export(result, as_json)
