"""The two decoders' graphs under one generation loop: where fastattn's gap to GenAI comes from.

benchmarks/genai.py times each library with its own loop: fastattn's Python loop (IOBinding,
the presents bound as the next pasts) against GenAI's C++ loop, which also shares one
max-length KV buffer between past and present (``past_present_share_buffer``), so a step
writes one position instead of copying the cache. This script runs both libraries' ONNX
graphs (the models benchmarks/genai.py built) under the *same* loop, fastattn's, in one
process with alternating rounds: if the graphs decode equally fast there, the difference in
genai.md is the loop and the shared buffer, not the graph.

    python -m benchmarks.genai_graphs      # after python -m benchmarks.genai; -> results/genai_graphs.{json,md}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.genai_worker import prompts
from benchmarks.gqa_fast_path import Decoder
from benchmarks.machine import describe

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "genai"
RESULTS = Path(__file__).parent / "results"
THREADS, PROMPT, NEW, ROUNDS = 2, 32, 128, 5
MODELS = {
    "genai-fp32": CACHE / "llama" / "fp32",
    "fastattn-fp32": CACHE / "fastattn" / "fp32",
    "genai-int4": CACHE / "llama" / "int4",
    "fastattn-int4": CACHE / "fastattn" / "int4",
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


def run() -> dict:
    graphs = {name: decoder(path) for name, path in MODELS.items()}
    prompt = prompts(1, PROMPT, 32000)[0]
    steps: dict[str, list[float]] = {name: [] for name in graphs}
    for name, graph in graphs.items():
        graph.generate(prompt, 8, shared=False)  # warm-up
    for round_ in range(ROUNDS):
        order = list(graphs) if round_ % 2 == 0 else list(reversed(graphs))
        for name in order:
            steps[name].append(graphs[name].generate(prompt, NEW, shared=False)[1])
    rows = [{"model": name, "decode_ms": float(np.median(v)), "rounds_ms": v} for name, v in steps.items()]
    return {"machine": describe(THREADS), "prompt": PROMPT, "new": NEW, "rounds": ROUNDS, "rows": rows}


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
    lines += ["", f"Machine: {m.get('cpu', '?')}, {THREADS} threads; onnxruntime {ort.__version__}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    result = run()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "genai_graphs.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "genai_graphs.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
