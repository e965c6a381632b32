"""``fastattn bench``: builds a :class:`~fastattn.bench.plan.Plan` and calls :func:`fastattn.bench.run.bench`."""

from __future__ import annotations

from pathlib import Path

import click

from fastattn.cli.app import command, err, json_option, out, print_json, progress, verbose_option


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
              help="The PyTorch model an export came from (a model file, or a Hugging Face checkpoint directory): "
                   "eager rows on the same weights and inputs.")  # fmt: skip
@click.option("--allow-pickle", is_flag=True, help="The --torch model is a pickled nn.Module (runs code from it).")
@click.option("--optimum", "optimum", multiple=True, type=click.Path(path_type=Path), metavar="CHECKPOINT_DIR",
              help="A Hugging Face checkpoint one of EXPORTS was made from: Optimum's own exports of it (made once "
                   "into $FASTATTN_CACHE/optimum) become rows, with PyTorch eager, and every row of it gets an "
                   "accuracy column on held-out text (pooled-embedding cosine, or perplexity and top-1 agreement).")
@click.option("--optimum-variants", default="fp32,o3,int8", show_default=True,
              help="Which Optimum exports: fp32 (main_export), o3 (ORTOptimizer O3), int8 (ORTQuantizer avx512_vnni, "
                   "dynamic).")  # fmt: skip
@click.option("--match-target", is_flag=True,
              help="Run each export only on the provider it was lowered for (portable exports on all).")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads [default: the CPUs this process may use].")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed runs before each timed block.")
@click.option("--repeats", type=click.IntRange(min=1), default=20, show_default=True, help="At least this many timed runs ...")
@click.option("--min-time", type=click.FloatRange(min=0), default=1.0, show_default=True, help="... and at least this many seconds.")
@click.option("--decode-steps", type=click.IntRange(min=0), default=16, show_default=True,
              help="Decoders: single-token steps per decode round (0: prefill only).")  # fmt: skip
@click.option("--in-process", is_flag=True, help="Run configurations of providers available here in this process "
              "(faster; peak memory is then not per configuration).")  # fmt: skip
@click.option("--save", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the result as JSON to this file.")  # fmt: skip
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None, help="Write a latency plot (PNG).")
@json_option
@verbose_option
@command
def bench_command(exports, providers, batch, seq, sweep_seq, torch_models, allow_pickle, optimum, optimum_variants,
                  match_target, threads, warmup, repeats, min_time, decode_steps, in_process, json_path, plot_path,
                  as_json) -> None:  # fmt: skip
    """Time the exports in EXPORTS... per execution provider (and PyTorch eager with --torch)."""
    import sys  # noqa: PLC0415

    from fastattn.bench.optimum import parse_variants  # noqa: PLC0415
    from fastattn.bench.plan import Plan, Settings, default_threads, parse_sizes  # noqa: PLC0415
    from fastattn.bench.run import bench as run_bench  # noqa: PLC0415
    from fastattn.bench.table import render  # noqa: PLC0415
    from fastattn.errors import InputError  # noqa: PLC0415

    if seq and sweep_seq:
        raise InputError("--seq and --sweep-seq both given", "pass one of them")
    settings = Settings(threads if threads is not None else default_threads(), warmup, repeats, min_time,
                        decode_steps=decode_steps, isolate=not in_process)  # fmt: skip
    plan = Plan.create(
        exports, providers, parse_sizes(batch, "--batch"),
        parse_sizes(sweep_seq, "--sweep-seq") if sweep_seq else parse_sizes(seq or "128", "--seq"),
        sweep=bool(sweep_seq), torch_models=torch_models, allow_pickle=allow_pickle, match_target=match_target,
        settings=settings, optimum=optimum, optimum_variants=parse_variants(optimum_variants),
    )  # fmt: skip
    with progress("benchmarking", quiet=as_json) as step:
        result = run_bench(plan, progress=step)
    if as_json:
        print_json(result.to_dict())
    else:
        out.print(render(result))
    if json_path:
        result.save(json_path)
        err.print(f"wrote {json_path}", highlight=False)
    if plot_path and result.rows:
        from fastattn.bench.plot import plot  # noqa: PLC0415

        plot(result, plot_path)
        err.print(f"wrote {plot_path}", highlight=False)
    if not result.rows:
        raise InputError("no configuration ran", "see the lines above")
    if result.failures:
        err.print(f"[bold red]error:[/] {len(result.failures)} configuration(s) failed (listed above)")
        sys.exit(1)
