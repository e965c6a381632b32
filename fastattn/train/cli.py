"""``fastattn train {lm,classifier,seq2seq}``: train a small model on the stdlib sources.

The model is a preset (the task's own by default: ``default``, ``encoder``, ``seq2seq``)
with optional changes (layers, widths, heads, window, labels); the command prints progress
every ``--log-every`` steps and the held-out metrics at the end. Registered on the main
group by :mod:`fastattn.cli`; this module imports nothing heavy until the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

TASK_PRESETS = {"lm": "default", "classifier": "encoder", "seq2seq": "seq2seq"}


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
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 2e-3, post-LN models 3e-4].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch threads [default: all cores].")
@click.option("--log-every", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug, with tracebacks).")
def train_command(
    task, output, preset, layers, d_model, heads, kv_heads, ffn, window, attention, labels, steps, batch, seq, seed,
    lr, threads, log_every, verbose,
) -> None:  # fmt: skip
    """Train a model on TASK (lm, classifier, seq2seq) over the Python stdlib sources and save it."""
    from fastattn.cli import _handle_errors  # here, not at import: fastattn.cli imports this module

    changes = {"layers": layers, "d_model": d_model, "heads": heads, "kv_heads": kv_heads, "ffn": ffn,
               "window": window, "attention": attention, "labels": labels}  # fmt: skip
    _handle_errors(_run)(task, output, preset, changes, steps, batch, seq, seed, lr, threads, log_every, verbose)


def _run(task, output, preset, changes, steps, batch, seq, seed, lr, threads, log_every, verbose) -> None:
    from fastattn.cli import _logging, err, out
    from fastattn.errors import InputError
    from fastattn.models import checkpoint
    from fastattn.train.trainer import TrainOptions, prepare, train

    _logging(verbose)
    if output.is_dir():
        raise InputError(f"{output} is a directory", "give the checkpoint file to write, e.g. -o model.pt")
    config = model_config(task, preset, **changes)
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


def model_config(
    task: str,
    preset: str | None = None,
    *,
    layers: int | None = None,
    d_model: int | None = None,
    heads: int | None = None,
    kv_heads: int | None = None,
    ffn: int | None = None,
    window: int | None = None,
    attention: str | None = None,
    labels: int | None = None,
):
    """The task's preset (or ``preset``) with the given changes; every stack gets ``layers`` layers of
    full attention, or of a sliding ``window``, when either is given; ``attention`` (the
    ``--attention`` patterns) then sets every layer's pattern, or each layer's."""
    from fastattn.errors import InputError
    from fastattn.models import presets
    from fastattn.models.config import LayerAttention, Pattern, with_attention

    name = preset or TASK_PRESETS[task]
    try:
        base = presets.preset(name)
    except ValueError as e:
        raise InputError(str(e), "pick one of the names listed") from e
    changes: dict = {k: v for k, v in (("d_model", d_model), ("num_heads", heads), ("ffn_dim", ffn),
                                      ("num_labels", labels)) if v is not None}  # fmt: skip
    if kv_heads is not None or heads is not None:
        changes["kv_heads"] = kv_heads if kv_heads is not None else min(base.kv_heads, heads)
    if layers is not None or window is not None:
        layer = LayerAttention(Pattern.SLIDING, window=window) if window else LayerAttention()
        for stack in ("encoder_layers", "decoder_layers"):
            current = getattr(base, stack)
            if current:
                changes[stack] = (layer,) * (layers or len(current))
    if window is not None and attention is not None:
        raise InputError("--window and --attention both set the layers' attention", "give one of them")
    if not changes and attention is None:
        return base
    try:
        config = base.replace(name=f"{name}-custom", **changes)
    except ValueError as e:
        raise InputError(f"bad model options: {e}", "change --d-model, --heads or --kv-heads") from e
    return with_attention(config, attention)
