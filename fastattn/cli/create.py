"""``fastattn create``: a freshly initialised built-in model, saved as a checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from fastattn.cli.app import command, out, verbose_option
from fastattn.errors import InputError


@click.command("create")
@click.argument("preset")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Checkpoint file to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="Initialisation seed.")
@click.option("--attention", default=None, metavar="PATTERN[,PATTERN...]",
              help="Attention of every layer, or of each layer: full, causal, sliding:W, global_local:G:W, "
                   "hierarchical:B.")  # fmt: skip
@verbose_option
@command
def create_command(preset, output, seed, attention) -> None:
    """Write a freshly initialised built-in model (PRESET: default, encoder, seq2seq) as a checkpoint."""
    from fastattn import models  # noqa: PLC0415
    from fastattn.models.config import with_attention  # noqa: PLC0415

    try:
        config = models.preset(preset)
    except ValueError as e:
        raise InputError(str(e), "pick one of the names listed") from e
    config = with_attention(config, attention)
    model = models.build(config, seed=seed)
    models.save(model, output)
    params = sum(p.numel() for p in model.parameters())
    out.print(f"wrote {output}: {config.arch.value} preset {preset!r}, {params:,} parameters", highlight=False)
