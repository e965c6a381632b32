"""``fastattn train {lm,classifier,seq2seq}``: train a small model on the stdlib sources.

The model is a preset (the task's own by default: ``default``, ``encoder``, ``seq2seq``)
with optional changes (layers, widths, heads, window, labels); progress goes to stderr
every ``--log-every`` steps and at least every few seconds, the held-out metrics at the end.
"""

from __future__ import annotations

from pathlib import Path

import click

from fastattn.cli.app import command, err, out, verbose_option
from fastattn.errors import InputError
from fastattn.train.model_config import TASK_PRESETS


@click.command("train")
@click.argument("task", type=click.Choice(list(TASK_PRESETS)))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Checkpoint file to write.")
@click.option("--preset", default=None, help="Model to start from [default: lm default, classifier encoder, "
              "seq2seq seq2seq].")  # fmt: skip
@click.option("--layers", type=click.IntRange(min=1), default=None, help="Layers per stack.")
@click.option("--d-model", type=click.IntRange(min=1), default=None, help="Model width.")
@click.option("--heads", type=click.IntRange(min=1), default=None, help="Attention heads.")
@click.option("--kv-heads", type=click.IntRange(min=1), default=None, help="Key/value heads (GQA when < heads).")
@click.option("--ffn", type=click.IntRange(min=1), default=None, help="Feed-forward width.")
@click.option("--window", type=click.IntRange(min=0), default=None,
              help="Sliding window of every layer (0: full attention).")  # fmt: skip
@click.option("--attention", default=None, metavar="PATTERN[,PATTERN...]",
              help="Attention of every layer, or of each layer: full, causal, sliding:W, global_local:G:W, "
                   "hierarchical:B.")  # fmt: skip
@click.option("--labels", type=click.IntRange(min=2), default=None, help="Classifier: number of stdlib packages.")
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seq", type=click.IntRange(min=2), default=None,
              help="Sequence length [default: lm 256, classifier 128, seq2seq 128 (+64 target)].")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate [default: 2e-3, post-LN models 3e-4].")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch threads [default: all cores].")
@click.option("--log-every", type=click.IntRange(min=1), default=50, show_default=True,
              help="Report every this many steps (and at least every 5 s).")  # fmt: skip
@verbose_option
@command
def train_command(task, output, preset, layers, d_model, heads, kv_heads, ffn, window, attention, labels, steps,
                  batch, seq, seed, lr, threads, log_every) -> None:  # fmt: skip
    """Train a model on TASK (lm, classifier, seq2seq) over the Python stdlib sources and save it."""
    from fastattn.models import checkpoint  # noqa: PLC0415
    from fastattn.train.model_config import model_config  # noqa: PLC0415
    from fastattn.train.trainer import TrainOptions, prepare, train  # noqa: PLC0415

    if output.is_dir():
        raise InputError(f"{output} is a directory", "give the checkpoint file to write, e.g. -o model.pt")
    if not output.absolute().parent.is_dir():
        raise InputError(f"directory {output.absolute().parent} does not exist", "create it, or write elsewhere")
    config = model_config(task, preset, layers=layers, d_model=d_model, heads=heads, kv_heads=kv_heads, ffn=ffn,
                          window=window, attention=attention, labels=labels)  # fmt: skip
    options = TrainOptions(steps=steps, batch=batch, seq=seq, seed=seed, lr=lr, threads=threads, log_every=log_every)
    prepare(task, config, options)  # bad input fails here, before anything is printed
    err.print(f"training {task} on {config.arch.value} {config.name!r}: {steps} steps of batch {batch}",
              highlight=False)  # fmt: skip

    def report(p) -> None:
        err.print(f"step {p.step:>6}/{p.steps}  loss {p.loss:.4f}  lr {p.lr:.2e}  "
                  f"{p.tokens_per_second:,.0f} tokens/s  {p.elapsed:.0f} s", highlight=False)  # fmt: skip

    result = train(task, config, options, report)
    checkpoint.save(result.model, output, result.tokenizer.to_dict(), result.eval_data, result.metrics)
    params = sum(p.numel() for p in result.model.parameters())
    out.print(f"wrote {output}: {params:,} parameters, {steps} steps in {result.seconds:.1f} s "
              f"({result.tokens_per_second:,.0f} tokens/s)", highlight=False)  # fmt: skip
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in result.eval_data.items())
    out.print(f"held-out eval set: {shapes}", highlight=False)
    out.print(f"held-out: {_figures(result.metrics)}  (untrained: {_figures(result.initial_metrics)})",
              highlight=False, soft_wrap=True)  # fmt: skip


def _figures(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
