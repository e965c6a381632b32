"""``fastattn bench``: builds a :class:`~fastattn.bench.plan.Plan` and calls :func:`fastattn.bench.run.bench`.

Registered on the ``fastattn`` group in ``fastattn/cli.py``. Imports nothing heavy at start-up.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("bench")
@click.argument("exports", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-p", "--provider", "providers", multiple=True, default=("cpu",), show_default=True,
              help="Execution provider (repeatable): cpu, openvino, cuda, ... Each runs in the environment "
              "that has it.")  # fmt: skip
@click.option("--batch", "batch", default="1", show_default=True, help="Batch sizes, e.g. 1,8.")
@click.option("--seq", "seq", default=None, help="Sequence lengths, e.g. 128,512 [default: 128].")
@click.option("--sweep-seq", default=None, help="A scaling sweep of sequence lengths, e.g. 512,1024,2048 "
              "(the table adds the log-log slope between lengths).")  # fmt: skip
@click.option("--torch", "torch_models", multiple=True, type=click.Path(path_type=Path),
              help="The PyTorch model an export came from: eager rows on the same weights and inputs.")  # fmt: skip
@click.option("--allow-pickle", is_flag=True, help="The --torch model is a pickled nn.Module (runs code from it).")
@click.option("--match-target", is_flag=True,
              help="Run each export only on the provider it was lowered for (portable exports on all).")  # fmt: skip
@click.option("--threads", type=int, default=None, help="Intra-op threads [default: the CPUs this process may use].")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed runs before each timed block.")
@click.option("--repeats", type=int, default=20, show_default=True, help="At least this many timed runs ...")
@click.option("--min-time", type=float, default=1.0, show_default=True, help="... and at least this many seconds.")
@click.option("--decode-steps", type=int, default=16, show_default=True,
              help="Decoders: single-token steps per decode round (0: prefill only).")  # fmt: skip
@click.option("--in-process", is_flag=True, help="Run configurations of providers available here in this process "
              "(faster; peak memory is then not per configuration).")  # fmt: skip
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the result as JSON.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None, help="Write a latency plot (PNG).")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug, with tracebacks).")
def bench(**options) -> None:
    """Time the exports in EXPORTS... per execution provider (and PyTorch eager with --torch)."""
    from fastattn.cli import _handle_errors

    _handle_errors(_bench)(**options)


def _bench(exports, providers, batch, seq, sweep_seq, torch_models, allow_pickle, match_target, threads, warmup,
           repeats, min_time, decode_steps, in_process, json_path, plot_path, verbose) -> None:  # fmt: skip
    import sys

    from rich.console import Console

    from fastattn.bench.plan import Plan, Settings, default_threads, parse_sizes
    from fastattn.bench.run import bench as run_bench
    from fastattn.bench.table import render
    from fastattn.cli import _logging, err, out
    from fastattn.errors import InputError

    _logging(verbose)
    if seq and sweep_seq:
        raise InputError("--seq and --sweep-seq both given", "pass one of them")
    settings = Settings(threads if threads is not None else default_threads(), warmup, repeats, min_time,
                        decode_steps=decode_steps, isolate=not in_process)  # fmt: skip
    plan = Plan.create(
        exports, providers, parse_sizes(batch, "--batch"),
        parse_sizes(sweep_seq, "--sweep-seq") if sweep_seq else parse_sizes(seq or "128", "--seq"),
        sweep=bool(sweep_seq), torch_models=torch_models, allow_pickle=allow_pickle, match_target=match_target,
        settings=settings,
    )  # fmt: skip
    with err.status("benchmarking") as status:
        result = run_bench(plan, progress=lambda message: status.update(message))
    (out if out.is_terminal else Console(width=200)).print(render(result))  # a file or pipe gets whole rows
    if json_path:
        result.save(json_path)
        out.print(f"wrote {json_path}")
    if plot_path and result.rows:
        from fastattn.bench.plot import plot

        plot(result, plot_path)
        out.print(f"wrote {plot_path}")
    if not result.rows:
        raise InputError("no configuration ran", "see the lines above")
    if result.failures:
        err.print(f"[bold red]error:[/] {len(result.failures)} configuration(s) failed (listed above)")
        sys.exit(1)
