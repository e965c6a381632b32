"""The two decoders' graphs under one generation loop: where fastattn's gap to GenAI comes from.

benchmarks/genai.py times each library with its own loop: fastattn's Python loop (IOBinding,
the presents bound as the next pasts) against GenAI's C++ loop, which also shares one
max-length KV buffer between past and present (``past_present_share_buffer``), so a step
writes one position instead of copying the cache. This script runs both libraries' ONNX
graphs (the models benchmarks/genai.py builds, under build/genai/; built here when missing) under
the *same* loop, fastattn's, in one process with alternating rounds: if the graphs decode
equally fast there, the difference in genai.md is the loop and the shared buffer, not the graph.

    make genai-env && python -m benchmarks.genai_graphs      # -> benchmarks/results/genai_graphs.{json,md}
    python -m benchmarks.genai_graphs --smoke --out DIR     # tiny models (benchmarks/record.py)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.genai import FULL, SMOKE_SHAPE, Shape, build_all
from benchmarks.genai_worker import prompts
from benchmarks.gqa_fast_path import Decoder
from benchmarks.machine import describe
from benchmarks.record import add_options, command, out_dir, work_dir, write

THREADS, NEW, ROUNDS = 2, 128, 5
SMOKE_NEW, SMOKE_ROUNDS = 4, 1
MODELS = {  # name -> (library, directory in it)
    "genai-fp32": ("llama", "fp32"),
    "fastattn-fp32": ("fastattn", "fp32"),
    "genai-int4": ("llama", "int4"),
    "fastattn-int4": ("fastattn", "int4"),
}


def decoder(directory: Path) -> Decoder:
    """The decoder graph of either library's directory: a fastattn manifest, or GenAI's cache names."""
    manifest = directory / "fastattn.json"
    if manifest.is_file():
        return Decoder.of_export(directory / "model.onnx", json.loads(manifest.read_text()))
    outputs = [o.name for o in ort.InferenceSession(str(directory / "model.onnx")).get_outputs()]
    config = json.loads((directory / "genai_config.json").read_text())["model"]
    return Decoder(directory / "model.onnx",  # GenAI: present.i.key -> past_key_values.i.key
                   {o: "past_key_values." + o.removeprefix("present.") for o in outputs if o != "logits"},
                   head_size=config["decoder"]["head_size"])  # fmt: skip


def run(libraries: dict[str, Path], shape: Shape, new: int, rounds: int) -> dict:
    graphs = {name: decoder(libraries[library] / sub) for name, (library, sub) in MODELS.items()}
    prompt = prompts(1, shape.prompt, shape.vocab)[0]
    steps: dict[str, list[float]] = {name: [] for name in graphs}
    for name, graph in graphs.items():
        graph.generate(prompt, 8, shared=False)  # warm-up
    for round_ in range(rounds):
        order = list(graphs) if round_ % 2 == 0 else list(reversed(graphs))
        for name in order:
            steps[name].append(graphs[name].generate(prompt, new, shared=False)[1])
    rows = [{"model": name, "decode_ms": float(np.median(v)), "rounds_ms": v} for name, v in steps.items()]
    return {"machine": describe(THREADS), "prompt": shape.prompt, "new": new, "rounds": rounds, "rows": rows}


def markdown(result: dict) -> str:
    lines = [
        "# Both libraries' decoder graphs under one loop",
        "",
        f"The models of genai.md, each run by the same Python IOBinding loop (presents bound as the next "
        f"pasts, a new present cache every step, no shared buffer), batch 1, {THREADS} threads, prompt "
        f"{result['prompt']} + {result['new']} greedy tokens; the median decode step of each of "
        f"{result['rounds']} alternating rounds in one process, and their median.",
        "",
        "| graph | decode ms/step | rounds |",
        "|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['decode_ms']:.3f} | {', '.join(f'{x:.3f}' for x in r['rounds_ms'])} |")
    m = result["machine"]
    lines += ["", f"Machine: {m.get('cpu', '?')}, {THREADS} threads; onnxruntime {m['versions'].get('onnxruntime', ort.__version__)}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument("--workdir", type=Path, default=None, help="the models of benchmarks/genai.py [build/genai]")
    args = parser.parse_args(argv)
    out = out_dir(args)
    shape, new, rounds = (SMOKE_SHAPE, SMOKE_NEW, SMOKE_ROUNDS) if args.smoke else (Shape(), NEW, ROUNDS)
    cache = args.workdir or work_dir(args, out, "genai")
    # the models benchmarks.genai builds (the same cache: a no-op when it ran first)
    llama, fastattn = build_all(prompts(FULL["prompts"], shape.prompt, shape.vocab), False, cache, shape,
                                new, args.smoke)  # fmt: skip
    result = run({"llama": llama, "fastattn": fastattn}, shape, new, rounds)
    result["command"] = command("genai_graphs", *(["--smoke"] if args.smoke else []), setup="make genai-env")
    write(out, "genai_graphs", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
