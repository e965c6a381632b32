"""Two ways into fastattn for a Hugging Face model, measured once on a small random Llama.

    mapped              the checkpoint mapped onto fastattn's own model family (fastattn/families/hf/architectures)
    attention-interface transformers' model with attn_implementation="fastattn" (fastattn/families/hf/generic.py):
                        the fallback for model types without a family spec

Same checkpoint directory, both exported for the CPU target and validated against the
transformers model. Recorded: attention nodes, export time (the whole ``export()`` call:
load, capture, lowering measurement, fusion, validation), and prefill latency of the
exported ONNX at batch 1, S = 512 (2 threads, blocks alternating, medians), with an empty
cache for the mapped decoder (which also returns the cache; the fallback has none).

    python -m benchmarks.hf_routes    # writes benchmarks/results/hf_routes.{json,md}
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.machine import describe
from benchmarks.timing import block_medians
from fastattn.exporter.pipeline import ExportOptions, export

THREADS = 2
SEQUENCE = 512
LLAMA = {"vocab_size": 1000, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
         "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 2048}  # fmt: skip


def checkpoint(directory: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**LLAMA)).eval().save_pretrained(directory)
    return directory


def run_export(ckpt: Path, out: Path, route: str):
    from fastattn.families.hf import architectures as families

    start = time.perf_counter()
    if route == "attention-interface":  # no family spec for llama: transformers' model with the fastattn attention
        with mock.patch.object(families, "find", lambda _: None):
            result = export(ckpt, ExportOptions(out, threads=THREADS))
    else:
        result = export(ckpt, ExportOptions(out, threads=THREADS))
    return result, time.perf_counter() - start


def feeds_for(session: ort.InferenceSession, ids: np.ndarray) -> dict[str, np.ndarray]:
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for value in session.get_inputs():
        if value.name.startswith("past_"):
            _, heads, _, size = value.shape
            feeds[value.name] = np.zeros((1, heads, 0, size), np.float32)
    return feeds


def main() -> None:
    torch.set_num_threads(THREADS)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = checkpoint(Path(tmp) / "llama")
        sessions, feeds = {}, {}
        ids = np.random.default_rng(0).integers(0, LLAMA["vocab_size"], (1, SEQUENCE)).astype(np.int64)
        for route in ("mapped", "attention-interface"):
            result, seconds = run_export(ckpt, Path(tmp) / route, route)
            manifest = result.manifest
            options = ort.SessionOptions()
            options.intra_op_num_threads = THREADS
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sessions[route] = ort.InferenceSession(str(result.output / "model.onnx"), options,
                                                   providers=["CPUExecutionProvider"],
                                                   disabled_optimizers=manifest.session.get("disabled_optimizers"))  # fmt: skip
            feeds[route] = feeds_for(sessions[route], ids)
            rows[route] = {
                "attention_nodes": len(manifest.attention),
                "kernels": sorted({a.lowering for a in manifest.attention}),
                "fusions": manifest.fusions.get("model", {}),
                "export_seconds": round(seconds, 1),
                "validation_worst_max_rel": max(o.max_rel for c in manifest.validation.cases for o in c.outputs),
                "cache": bool(manifest.graphs[0].cache),
            }
        logits = {r: sessions[r].run(["logits"], feeds[r])[0] for r in sessions}
        agree = float(np.abs(logits["mapped"] - logits["attention-interface"]).max())
        ms = block_medians({r: (lambda r=r: sessions[r].run(None, feeds[r])) for r in sessions}, rounds=5, block=5)
    for route, row in rows.items():
        row["prefill_ms"] = round(ms[route], 2)
    result = {"machine": describe(THREADS), "llama": LLAMA, "sequence": SEQUENCE, "batch": 1,
              "statistic": "median of 5 alternating rounds of 5-call blocks, spinning off",
              "logits_max_abs_difference": agree, "rows": rows}  # fmt: skip
    out = Path(__file__).parent / "results"
    (out / "hf_routes.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        "# Hugging Face models into fastattn: mapped onto fastattn's family vs transformers' AttentionInterface",
        "",
        f"{m['cpu']}, {THREADS} threads; " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()) + ".",
        f"Random LlamaForCausalLM ({', '.join(f'{k} {v}' for k, v in LLAMA.items())}), one checkpoint directory, "
        f"both exported for the CPU target; prefill at batch 1, S={SEQUENCE}: {result['statistic']}.",
        "Command: `python -m benchmarks.hf_routes`.",
        "",
        "| route | attention nodes | kernels | fusions | KV cache | export s | prefill ms | validation worst max rel |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for route, r in rows.items():
        fused = ", ".join(f"{k} {v}" for k, v in r["fusions"].items() if v) or "none"
        lines.append(f"| {route} | {r['attention_nodes']} | {', '.join(r['kernels'])} | {fused} | "
                     f"{'yes' if r['cache'] else 'no'} | {r['export_seconds']} | {r['prefill_ms']} | "
                     f"{r['validation_worst_max_rel']:.1e} |")  # fmt: skip
    lines += ["", f"Logits of the two exports differ by at most {agree:.1e} at S={SEQUENCE}.",
              f"Prefill ratio attention-interface / mapped: {ms['attention-interface'] / ms['mapped']:.2f}x."]  # fmt: skip
    (out / "hf_routes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
