"""One configuration of the decoding benchmark (benchmarks/genai.py), alone in a fresh process.

Loads one model, generates once to warm up, then greedily generates ``--new`` tokens after
each prompt ``--runs`` times, and prints one line ``RESULT {json}``: per-generation timings,
the tokens, RSS after loading and the process's peak RSS (VmHWM). Runs in either environment, so
it imports only the standard library and NumPy at the top; each backend imports its own
runtime:

    genai     an ONNX Runtime GenAI model directory (genai_config.json)   .venv-genai/bin/python
    fastattn  a fastattn export directory (fastattn.json)                 .venv/bin/python
    eager     a fastattn checkpoint, PyTorch eager with a KV cache        .venv/bin/python

Every generation is timed from the call that starts it to its last token: ``prefill`` is the
time to the first token, ``decode`` the time per later token; all three backends run the
model ``new`` times (the prompt once, then one token at a time). GenAI's per-generation setup
(``og.GeneratorParams`` + ``og.Generator``) is inside the time and also reported alone.

    python -m benchmarks.genai_worker genai build/genai/llama/int4 --prompts '[[5, 6, 7]]' --new 128
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

# A generation: prompt -> (tokens, seconds of setup before the model runs (GenAI's Generator; 0 where
# it is not separable), seconds to the first token, seconds in all), all from the same start
Generate = Callable[[list[int]], tuple[list[int], float, float, float]]
DISTRIBUTIONS = (
    "onnxruntime-genai",
    "onnxruntime",
    "transformers",
    "tokenizers",
    "torch",
    "numpy",
    "fastattn",
)


def prompts(count: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """Random prompts; ids 0-2 (unk, bos, eos of the Llama tokenizer) are left out."""
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, length).tolist() for _ in range(count)]


def memory_mb(field: str = "VmRSS") -> float:
    """/proc/self/status: resident set now (VmRSS) or its peak (VmHWM), MB.

    The peak is VmHWM, not ``getrusage().ru_maxrss``: Linux carries ru_maxrss across exec, so a
    worker started by a large parent would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def genai(path: str, new: int, threads: int) -> Generate:
    """ONNX Runtime GenAI: threads and stop tokens come from genai_config.json (benchmarks/genai_llama.py)."""
    import onnxruntime_genai as og

    options = json.loads((Path(path) / "genai_config.json").read_text())["model"]["decoder"][
        "session_options"
    ]
    if options.get("intra_op_num_threads") != threads:
        raise RuntimeError(
            f"{path}/genai_config.json sets {options.get('intra_op_num_threads')} threads, not {threads}"
        )
    model = og.Model(path)

    def run(prompt: list[int]) -> tuple[list[int], float, float, float]:
        start = time.perf_counter()
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt) + new, do_sample=False, top_k=1)
        generator = og.Generator(model, params)  # ~12 ms on this machine, whatever max_length
        ready = time.perf_counter()
        generator.append_tokens(np.array(prompt, np.int32))
        generator.generate_next_token()
        first = time.perf_counter()
        while not generator.is_done():
            generator.generate_next_token()
        end = time.perf_counter()
        tokens = [int(t) for t in generator.get_sequence(0)[len(prompt) :]]
        return tokens, ready - start, first - start, end - start

    return run


def fastattn(path: str, new: int, threads: int) -> Generate:
    """fastattn's torch-free runtime: ``ExportedModel.generate`` (greedy), its session built here."""
    from fastattn.runtime import load

    model = load(path, provider="cpu", threads=threads)
    model.graph()  # the session, built now so that loading is not timed as prefill

    def run(prompt: list[int]) -> tuple[list[int], float, float, float]:
        marks: list[float] = []
        start = time.perf_counter()
        result = model.generate(  # no stop ids: a Hugging Face export would stop at its EOS id
            prompt, max_new_tokens=new, stop_ids=[], on_step=lambda step, _: marks.append(time.perf_counter())
        )
        end = time.perf_counter()
        if result.finish != ["length"]:
            raise RuntimeError(f"generation finished by {result.finish}, not by length")
        return result.tokens[0], 0.0, marks[0] - start, end - start

    return run


def eager(path: str, new: int, threads: int) -> Generate:
    """PyTorch eager: the model's own KV cache, ``model(ids, mask, past) -> (logits, presents)``, greedy."""
    import torch

    from fastattn.models import load

    torch.set_num_threads(threads)
    model = load(path).eval()

    def run(prompt: list[int]) -> tuple[list[int], float, float, float]:
        start = time.perf_counter()
        first = start
        with torch.inference_mode():
            ids = torch.tensor([prompt])
            mask, past, out = torch.ones_like(ids), None, []
            for step in range(new):
                logits, past = model(ids, mask, past)
                out.append(int(logits[0, -1].argmax()))
                if step == 0:
                    first = time.perf_counter()
                ids = torch.tensor([[out[-1]]])
                mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], 1)
        return out, 0.0, first - start, time.perf_counter() - start

    return run


BACKENDS: dict[str, Callable[[str, int, int], Generate]] = {
    "genai": genai,
    "fastattn": fastattn,
    "eager": eager,
}


def measure(backend: str, path: str, prompt_ids: list[list[int]], new: int, runs: int, threads: int) -> dict:
    """Load, warm up once, then ``runs`` rounds over the prompts; timings, tokens and memory."""
    started = time.perf_counter()
    generate = BACKENDS[backend](path, new, threads)
    load_s = time.perf_counter() - started
    rss_loaded = memory_mb()
    generate(prompt_ids[0])  # warm-up
    timings, tokens, consistent = [], [None] * len(prompt_ids), True
    for run in range(runs):
        for i, prompt in enumerate(prompt_ids):
            got, setup, first, total = generate(prompt)
            if len(got) != new:
                raise RuntimeError(f"{backend}: {len(got)} new tokens after prompt {i}, expected {new}")
            consistent &= tokens[i] is None or tokens[i] == got
            tokens[i] = tokens[i] or got
            timings.append({"run": run, "prompt": i, "setup_ms": setup * 1e3, "prefill_ms": first * 1e3,
                            "total_s": total, "decode_ms_per_token": (total - first) * 1e3 / max(new - 1, 1),
                            "tokens_per_s": new / total, "tokens_per_s_without_setup": new / (total - setup)})  # fmt: skip
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - started
    return {"backend": backend, "path": path, "new_tokens": new, "load_s": round(load_s, 3),
            "rss_after_load_mb": round(rss_loaded, 1), "peak_rss_mb": round(memory_mb("VmHWM"), 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "wall_s": round(wall, 2),
            "timings": timings, "tokens": tokens, "deterministic": consistent, "versions": versions(),
            "cpus": sorted(os.sched_getaffinity(0))}  # fmt: skip


def versions() -> dict[str, str]:
    found = {}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend", choices=sorted(BACKENDS))
    parser.add_argument("path")
    parser.add_argument("--prompts", required=True, help="JSON list of token-id lists")
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    result = measure(args.backend, args.path, json.loads(args.prompts), args.new, args.runs, args.threads)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
