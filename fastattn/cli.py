"""Command line: a thin layer that builds typed options and calls one library function per command.

User errors (:class:`FastAttnError`) print one line and exit non-zero without a traceback;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from fastattn.bench.cli import bench as bench_command
from fastattn.errors import FastAttnError, InputError
from fastattn.exporter.lowering.target import Target
from fastattn.generate_cli import generate_command
from fastattn.quantize.cli import quantize_options, quantize_step
from fastattn.train.cli import train_command

err = Console(stderr=True)
out = Console()


def _handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FastAttnError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            if logging.getLogger().level <= logging.DEBUG and e.__cause__ is not None:
                err.print_exception()
            sys.exit(e.exit_code)

    return wrapper


def _logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)


verbose_option = click.option("-v", "--verbose", count=True, help="More logging (-vv: debug, with tracebacks).")


@click.group()
@click.version_option(package_name="fastattn")
def main() -> None:
    """Export efficient-attention Transformers to fast, validated ONNX models."""


def _parse_input_specs(_ctx, _param, values: tuple[str, ...]):
    from fastattn.exporter.input_spec import parse_input_spec

    try:
        return tuple(parse_input_spec(v) for v in values)
    except InputError as e:
        raise click.BadParameter(str(e)) from e


@click.command("export")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output directory [default: <model>-fastattn].")
@click.option(
    "--input", "inputs", multiple=True, callback=_parse_input_specs, metavar="NAME:DIMS:DTYPE",
    help="An input of a model that is not fastattn's own (repeat per input): NAME:DIMS:DTYPE[:FILL], e.g. "
    "src:batch,seq,512:float32. DIMS are sizes or names of dynamic dims (seq=12 traces seq at 12). FILL says "
    "what validation feeds: ':<N' token ids in [0, N) (integer inputs default to the model's vocabulary "
    "when it says one, else [0, 2)), ':mask' all ones (the default for integer inputs named *mask*), "
    "':zeros', ':normal'. Example: ids:batch,seq:int64:<32000.",
)  # fmt: skip
@click.option(
    "--allow-pickle", is_flag=True,
    help="Load a whole pickled nn.Module (torch.save(model)). Unpickling runs code from the file: "
    "use only with files you trust.",
)  # fmt: skip
@click.option("--code", type=click.Path(path_type=Path), default=None, metavar="FILE.py",
              help="With --allow-pickle: the Python file defining the pickled model's classes; imported as a "
                   "module (its __main__ block does not run), classes the pickle names in __main__ come from it.")
@click.option("--opset", type=int, default=None, help="ONNX opset of the exported graph [default: 20].")
@click.option(
    "-t", "--target", type=click.Choice([t.value for t in Target]), default=Target.CPU.value, show_default=True,
    help="Execution provider to lower attention for; portable keeps the fastattn function nodes.",
)  # fmt: skip
@click.option("--profile", "profile", multiple=True, callback=lambda c, p, v: _parse_profile(v), metavar="NAME=BxS[+P]",
              help="A shape to time lowering candidates at, e.g. prefill=1x2048, decode=1x1+2048 (repeatable).")
@click.option("--lowering", "only", default=None, help="Use this lowering rule wherever it applies (no measurement).")
@click.option("--allow-fusion-shortfall", is_flag=True, help="Accept fewer fusions than the model should get.")
@click.option("--kv-buffer", is_flag=True,
              help="Decoders on CPU: GroupQueryAttention with rotary inside and one shared past/present buffer "
                   "(GenAI's decode path); rows must be unpadded, sequences at most max_positions long.")
@click.option("--task", default=None, metavar="TASK",
              help="Hugging Face checkpoints: feature-extraction, text-generation or text2text-generation "
                   "(Optimum's names) [default: from the checkpoint's architecture].")
@quantize_options()
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads used for validation.")
@click.option("-f", "--force", is_flag=True, help="Replace a non-empty output directory.")
@verbose_option
@_handle_errors
def export_command(
    model, output, inputs, allow_pickle, code, opset, target, profile, only, allow_fusion_shortfall, kv_buffer, task,
    threads, force, verbose, **quantize,
) -> None:  # fmt: skip
    """Export MODEL to ONNX, validated: a model.pt (fastattn checkpoint, TorchScript, .pt2 or pickled module)
    or a Hugging Face checkpoint directory (config.json + safetensors, never downloaded)."""
    from fastattn.exporter.capture import DEFAULT_OPSET
    from fastattn.exporter.pipeline import ExportOptions, export

    _logging(verbose)
    output = output or model.with_name(model.stem + "-fastattn")
    options = ExportOptions(
        output, inputs, allow_pickle, opset or DEFAULT_OPSET, force=force, threads=threads, target=Target(target),
        profile=profile, only=only, allow_fusion_shortfall=allow_fusion_shortfall,
        quantize=quantize_step(target, **quantize), kv_buffer=kv_buffer, task=task, code=code,
    )  # fmt: skip
    with err.status("exporting") as status:
        result = export(model, options, progress=lambda message: status.update(message))
    _print_summary(result)


def _print_summary(result) -> None:
    """Attention layers and validation of an export, compactly; the full story is in report.md."""
    manifest = result.manifest
    layers = Table("graph", "layer", "kind", "heads/kv", "window", "global", "kernel",
                   title=f"attention (target {manifest.target})")  # fmt: skip
    for a in manifest.attention:
        layers.add_row(a.graph, a.layer, a.kind, f"{a.num_heads}/{a.kv_num_heads}", str(a.window or "-"),
                       str(a.global_tokens or "-"), a.lowering)  # fmt: skip
    out.print(layers)
    cases = Table("graph", "case", "worst output", "max abs", "max rel", "cosine", "", title="validation vs PyTorch")
    for c in result.validation.cases:
        worst = max(c.outputs, key=lambda o: (not o.passed, o.max_rel))
        mark = "[green]ok[/]" if c.passed else "[red]FAIL[/]"
        cases.add_row(c.case.graph, c.case.name, worst.name, f"{worst.max_abs:.2e}", f"{worst.max_rel:.2e}",
                      f"{worst.cosine:.7f}", mark)  # fmt: skip
    out.print(cases)
    for graph, counts in manifest.fusions.items():
        fired = ", ".join(f"{name} {n}" for name, n in counts.items() if n) or "none"
        out.print(f"fusions in {graph}: {fired}")
    if manifest.quantization:
        _print_quantization(manifest.quantization)
    files = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(result.output.glob("*.onnx*")))
    out.print(f"[bold green]exported[/] {result.output} ({files}) in {result.timings['total']:.1f} s; "
              f"report: {result.output / 'report.md'}")  # fmt: skip


def _print_quantization(q: dict) -> None:
    table = Table("model", "perplexity", "accuracy", "top-1 agreement", "cosine",
                  title=f"{q['mode']} accuracy on {q['data']} (vs the float ONNX model)")  # fmt: skip
    for name, f in q["figures"].items():
        cells = [f"{f[k]:.6g}" if k in f else "-" for k in ("perplexity", "accuracy", "agreement", "cosine")]
        if "cosine_min" in f:  # sentence embeddings: mean per-sample cosine (least)
            cells[-1] += f" ({f['cosine_min']:.6g})"
        table.add_row(name, *cells)
    out.print(table)
    kept = f", {len(q['kept'])} kept in float" if q["kept"] else ""
    out.print(f"{q['mode']}: {len(q['quantized'])} weights quantized{kept}; "
              f"{q['size_before'] / 1e6:.1f} MB -> {q['size_after'] / 1e6:.1f} MB; gate passed")  # fmt: skip


main.add_command(export_command)


@main.command("quantize")
@click.argument("directory", type=click.Path(path_type=Path))
@quantize_options(mode_required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write the quantized export here [default: replace DIRECTORY].")
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads.")
@click.option("-f", "--force", is_flag=True, help="Replace a non-empty output directory.")
@verbose_option
@_handle_errors
def quantize_command(directory, output, threads, force, verbose, **quantize) -> None:
    """Quantize the float export in DIRECTORY, gated on accuracy against its float graphs."""
    from fastattn.exporter.rework import requantize
    from fastattn.runtime.manifest import Manifest

    _logging(verbose)
    target = Manifest.load(directory).target
    with err.status("quantizing") as status:
        result = requantize(directory, quantize_step(target, **quantize), output, force, threads,
                            progress=lambda message: status.update(message))  # fmt: skip
    _print_summary(result)


def export_main() -> None:
    """Entry point of ``fastattn-export`` (the same as ``fastattn export``)."""
    export_command(prog_name="fastattn-export")


@main.command("optimize")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("-t", "--target", type=click.Choice([t.value for t in Target if t is not Target.PORTABLE]),
              default=Target.CPU.value, show_default=True, help="Execution provider to lower attention for.")
@click.option("--profile", "profile", multiple=True, callback=lambda c, p, v: _parse_profile(v), metavar="NAME=BxS[+P]",
              help="A shape to time lowering candidates at (repeatable).")
@click.option("--lowering", "only", default=None, help="Use this lowering rule wherever it applies.")
@click.option("--allow-fusion-shortfall", is_flag=True, help="Accept fewer fusions than expected.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads.")
@verbose_option
@_handle_errors
def optimize_command(output, target, profile, only, allow_fusion_shortfall, threads, verbose) -> None:
    """Lower a portable export in OUTPUT for a target, validated against its portable graphs."""
    from fastattn.exporter.rework import reoptimize

    _logging(verbose)
    with err.status("optimizing") as status:
        result = reoptimize(output, Target(target), profile, only, allow_fusion_shortfall, threads,
                            progress=lambda message: status.update(message))  # fmt: skip
    _print_summary(result)


@main.command("validate")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--allow-pickle", is_flag=True, help="Load a pickled nn.Module (runs code from the file).")
@click.option("--code", type=click.Path(path_type=Path), default=None, metavar="FILE.py",
              help="With --allow-pickle: the Python file defining the pickled model's classes.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads.")
@verbose_option
@_handle_errors
def validate_command(model, output, allow_pickle, code, threads, verbose) -> None:
    """Re-run the comparison of the export in OUTPUT against MODEL; exit 3 if it fails."""
    from fastattn.exporter.pipeline import revalidate

    _logging(verbose)
    with err.status("validating"):
        result = revalidate(model, output, allow_pickle=allow_pickle, threads=threads, code=code)
    cases = len(result.validation.cases)
    out.print(f"[bold green]passed[/] {cases} cases; worst max rel error {result.validation.worst().max_rel:.2e}")


@main.command("create")
@click.argument("preset")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Checkpoint file to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="Initialisation seed.")
@_handle_errors
def create_command(preset, output, seed) -> None:
    """Write a freshly initialised built-in model (PRESET: default, encoder, seq2seq) as a checkpoint."""
    from fastattn import models

    try:
        config = models.preset(preset)
    except ValueError as e:
        raise InputError(str(e), "pick one of the names listed") from e
    model = models.build(config, seed=seed)
    models.save(model, output)
    params = sum(p.numel() for p in model.parameters())
    out.print(f"wrote {output}: {config.arch.value} preset {preset!r}, {params:,} parameters")


@main.command("run")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE",
              help="An input as NAME=file.npy or NAME=JSON (e.g. input_ids=[[1,2,3]]).")  # fmt: skip
@click.option("--random", "random_", is_flag=True, help="Fill inputs not given with sample data from the manifest.")
@click.option("--size", "sizes", multiple=True, metavar="DIM=N", help="Size of a dynamic dim for --random.")
@click.option("--graph", default=None, help="Graph to run (encoder-decoder exports have two).")
@click.option("-p", "--provider", default="cpu", show_default=True, help="Execution provider.")
@click.option("--save", type=click.Path(path_type=Path), default=None, help="Write the outputs to an .npz file.")
@verbose_option
@_handle_errors
def run_command(output, inputs, random_, sizes, graph, provider, save, verbose) -> None:
    """Run the exported model in OUTPUT with the torch-free runtime and summarise its outputs."""
    from fastattn.runtime import load

    _logging(verbose)
    model = load(output, provider=provider)
    session = model.graph(graph)
    feeds = dict(_parse_feed(v) for v in inputs)
    if random_:
        dims = dict(_parse_size(s) for s in sizes)
        sample = model.sample(graph, _default_sizes(session.entry, dims))
        feeds = {**{k: v for k, v in sample.items() if k not in feeds}, **feeds}
    results = session.run(feeds)
    table = Table("output", "shape", "dtype", "min", "max", "mean", title=f"{session.entry.file} on {provider}")
    for name, value in results.items():
        v = value.astype(np.float64) if value.size else np.zeros(1)
        table.add_row(name, str(tuple(value.shape)), str(value.dtype), f"{v.min():.4g}", f"{v.max():.4g}", f"{v.mean():.4g}")
    out.print(table)
    if save:
        np.savez(save, **results)
        out.print(f"wrote {save}")


def _parse_feed(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise InputError(f"bad --input {text!r}", "write NAME=file.npy or NAME=JSON, e.g. input_ids=[[1,2,3]]")
    if value.endswith(".npy"):
        try:
            return name, np.load(value, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {value} for input {name!r}: {e}", "pass a .npy file saved by numpy") from e
    try:
        return name, json.loads(value)  # a Python list: the runtime converts it to the input's dtype by value
    except json.JSONDecodeError as e:
        raise InputError(f"input {name!r}: {value!r} is neither a .npy path nor JSON", "e.g. input_ids=[[1,2,3]]") from e


def _parse_profile(values: tuple[str, ...]):
    """``prefill=1x2048`` / ``decode=1x1+2048`` -> ShapeCase(name, batch, sequence, past)."""
    from fastattn.exporter.lowering.measure import ShapeCase

    cases = []
    for text in values:
        name, _, shape = text.partition("=")
        match = re.fullmatch(r"(\d+)x(\d+)(?:\+(\d+))?", shape)
        if not name or not match:
            raise click.BadParameter(f"{text!r}: write NAME=BATCHxSEQ[+PAST], e.g. decode=1x1+2048")
        batch, seq, past = (int(g) if g else 0 for g in match.groups())
        cases.append(ShapeCase(name, batch, seq, past))
    return tuple(cases)


def _parse_size(text: str) -> tuple[str, int]:
    name, _, value = text.partition("=")
    if not value.isdigit():
        raise InputError(f"bad --size {text!r}", "write DIM=N, e.g. --size sequence=16")
    return name, int(value)


def _default_sizes(entry, given: dict[str, int]) -> dict[str, int]:
    from fastattn.runtime.session import graph_dims

    defaults = {"batch": 1, "past_sequence": 0}
    return {d: given.get(d, defaults.get(d, 8)) for d in graph_dims(entry)}


main.add_command(train_command)
main.add_command(bench_command)
main.add_command(generate_command)


if __name__ == "__main__":
    main()
