"""The ``fastattn`` command group: one module per command, registered here and nowhere else."""

from __future__ import annotations

import click

from fastattn.cli.app import Group
from fastattn.cli.bench import bench_command
from fastattn.cli.create import create_command
from fastattn.cli.export import export_command, export_main
from fastattn.cli.generate import generate_command
from fastattn.cli.package import package_command
from fastattn.cli.rework import optimize_command, quantize_command
from fastattn.cli.run import run_command
from fastattn.cli.train import train_command
from fastattn.cli.validate import validate_command

__all__ = ["export_main", "main"]


@click.group(cls=Group)
@click.version_option(package_name="fastattn")
def main() -> None:
    """Export efficient-attention Transformers to fast, validated ONNX models."""


for _command in (create_command, train_command, export_command, optimize_command, quantize_command,
                 validate_command, package_command, run_command, generate_command, bench_command):  # fmt: skip
    main.add_command(_command)
