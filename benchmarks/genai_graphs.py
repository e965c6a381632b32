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
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.genai_worker import prompts
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


class Graph:
    """A decoder ONNX graph and its cache pairs (present -> past), from either library's directory."""

    def __init__(self, directory: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        manifest = directory / "fastattn.json"
        disabled = None
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            disabled = data.get("session", {}).get("disabled_optimizers") or None
            self.pairs = {c["present"]: c["past"] for c in data["graphs"][0]["cache"]}
        else:  # GenAI: present.i.key -> past_key_values.i.key
            self.pairs = None
        self.session = ort.InferenceSession(str(directory / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"], disabled_optimizers=disabled)  # fmt: skip
        self.outputs = [o.name for o in self.session.get_outputs()]
        if self.pairs is None:
            self.pairs = {o: "past_key_values." + o.removeprefix("present.") for o in self.outputs if o != "logits"}
        self.pasts = {i.name: i.shape for i in self.session.get_inputs() if i.name in self.pairs.values()}

    def generate(self, prompt: list[int], new: int) -> tuple[list[int], list[float]]:
        """Greedy tokens and the seconds of each decode step (the prompt's step left out)."""
        binding = self.session.io_binding()
        for name, shape in self.pasts.items():
            binding.bind_cpu_input(name, np.zeros((1, shape[1], 0, 64), np.float32))
        ids, mask = np.array([prompt], np.int64), np.ones((1, len(prompt)), np.int64)
        tokens, steps = [], []
        for _ in range(new):
            start = time.perf_counter()
            binding.bind_cpu_input("input_ids", ids)
            binding.bind_cpu_input("attention_mask", mask)
            binding.clear_binding_outputs()
            for name in self.outputs:
                binding.bind_output(name, "cpu")
            self.session.run_with_iobinding(binding)
            for name, value in zip(self.outputs, binding.get_outputs(), strict=True):
                if name == "logits":
                    token = int(value.numpy()[0, -1].argmax())
                else:
                    binding.bind_ortvalue_input(self.pairs[name], value)
            steps.append(time.perf_counter() - start)
            tokens.append(token)
            ids, mask = np.array([[token]], np.int64), np.ones((1, mask.shape[1] + 1), np.int64)
        return tokens, steps[1:]


def run() -> dict:
    graphs = {name: Graph(path) for name, path in MODELS.items()}
    prompt = prompts(1, PROMPT, 32000)[0]
    steps: dict[str, list[float]] = {name: [] for name in graphs}
    for name, graph in graphs.items():
        graph.generate(prompt, 8)  # warm-up
    for round_ in range(ROUNDS):
        order = list(graphs) if round_ % 2 == 0 else list(reversed(graphs))
        for name in order:
            _, times = graphs[name].generate(prompt, NEW)
            steps[name].append(float(np.median(times)) * 1e3)
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
