"""``fastattn run``: run an export with the torch-free runtime and summarise (or save) its outputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import click
import numpy as np
from rich.table import Table

from fastattn.cli.app import command, json_option, out, print_json, provider_option, threads_option, verbose_option
from fastattn.cli.options import parse_size
from fastattn.errors import InputError
from fastattn.files import write_atomic


@click.command("run")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE",
              help="An input as NAME=file.npy or NAME=JSON (e.g. input_ids=[[1,2,3]]).")  # fmt: skip
@click.option("--random", "random_", is_flag=True, help="Fill inputs not given with sample data from the manifest.")
@click.option("--size", "sizes", multiple=True, metavar="DIM=N", help="Size of a dynamic dim for --random.")
@click.option("--graph", default=None, help="Graph to run (encoder-decoder exports have two).")
@provider_option
@threads_option
@click.option("--save", type=click.Path(path_type=Path), default=None, help="Write the outputs to an .npz file.")
@json_option
@verbose_option
@command
def run_command(output, inputs, random_, sizes, graph, provider, threads, save, as_json) -> None:
    """Run the exported model in OUTPUT with the torch-free runtime and summarise its outputs."""
    from fastattn.runtime import load  # noqa: PLC0415
    from fastattn.runtime.session import graph_dims  # noqa: PLC0415

    save = _save_path(save) if save is not None else None
    model = load(output, provider=provider, threads=threads)
    entry = model.manifest.graph(graph)
    feeds = dict(_parse_feed(v) for v in inputs)
    given = dict(parse_size(s) for s in sizes)
    unknown = sorted(set(given) - set(graph_dims(entry)))
    if unknown:
        raise InputError(f"--size names {', '.join(map(repr, unknown))}, not a dim of graph {entry.name!r}",
                         f"use dims of its inputs: {', '.join(graph_dims(entry))}")  # fmt: skip
    if given and not random_:
        raise InputError("--size only sizes inputs made by --random", "add --random, or drop --size")
    if random_:
        defaults = {"batch": 1, "past_sequence": 0}
        sample = model.sample(entry.name, {d: given.get(d, defaults.get(d, 8)) for d in graph_dims(entry)})
        feeds = {**{k: v for k, v in sample.items() if k not in feeds}, **feeds}
    results = model.graph(entry.name).run(feeds)
    if save is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **results)
        write_atomic(save, buffer.getvalue())
    if as_json:
        print_json({name: _stats(v) for name, v in results.items()} | ({"saved": str(save)} if save else {}))
        return
    table = Table("output", "shape", "dtype", "min", "max", "mean", title=f"{entry.file} on {provider}")
    for name, value in results.items():
        s = _stats(value)
        table.add_row(name, str(tuple(value.shape)), str(value.dtype), f"{s['min']:.4g}", f"{s['max']:.4g}",
                      f"{s['mean']:.4g}")  # fmt: skip
    out.print(table)
    if save is not None:
        out.print(f"wrote {save}", highlight=False)


def _stats(value: np.ndarray) -> dict:
    v = value.astype(np.float64) if value.size else np.zeros(1)
    return {"shape": list(value.shape), "dtype": str(value.dtype), "min": float(v.min()), "max": float(v.max()),
            "mean": float(v.mean())}  # fmt: skip


def _save_path(path: Path) -> Path:
    """Where ``--save`` writes: an .npz file in an existing directory (checked before anything runs)."""
    if path.is_dir():
        raise InputError(f"--save {path} is a directory", "give a file name, e.g. --save outputs.npz")
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")  # numpy's convention, said in the output
    if not path.parent.is_dir():
        raise InputError(f"--save {path}: directory {path.parent} does not exist", "create it, or save elsewhere")
    return path


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
