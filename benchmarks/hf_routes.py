"""Two ways into fastattn for a Hugging Face model, measured once on a small random Llama.

    mapped              the checkpoint mapped onto fastattn's own model family (fastattn/families/hf/architectures)
    attention-interface transformers' model with attn_implementation="fastattn" (fastattn/families/hf/generic.py):
                        the fallback for model types without a family spec

Same checkpoint directory, both exported for the CPU target and validated against the
transformers model. Recorded: attention nodes, export time (the whole ``export()`` call:
load, capture, lowering measurement, fusion, validation), and prefill latency of the
exported ONNX at batch 1, S = 512 (2 threads, blocks alternating, medians), with an empty
cache for the mapped decoder (which also returns the cache; the fallback has none).

    python -m benchmarks.hf_routes                  # writes benchmarks/results/hf_routes.{json,md}
    python -m benchmarks.hf_routes --smoke --out DIR    # a 2-layer hidden-64 Llama, S=32 (benchmarks/record.py)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks.record import add_options, command, out_dir, work_dir, write

THREADS = 2
FULL = {"sequence": 512, "rounds": 5, "block": 5, "measure": {},
        "llama": {"vocab_size": 1000, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
                  "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 2048}}  # fmt: skip
SMOKE = {"sequence": 32, "rounds": 1, "block": 2, "measure": {"repeats": 1},
         "llama": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}}  # fmt: skip
ROUTES = ("mapped", "attention-interface")


def checkpoint(directory: Path, llama: dict) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**llama)).eval().save_pretrained(directory)
    return directory


def run_export(ckpt: Path, out: Path, route: str, plan: dict):
    from fastattn.exporter.lowering.measure import ShapeCase
    from fastattn.exporter.pipeline import ExportOptions, export
    from fastattn.families.hf import architectures as families

    measure = dict(plan["measure"])
    if measure:  # a smoke run times its lowering candidates once, at its own small shapes
        S = plan["sequence"]
        measure["profile"] = (ShapeCase("prefill", 1, S), ShapeCase("decode", 1, 1, past=S))
    options = ExportOptions(out, threads=THREADS, force=True, **measure)
    start = time.perf_counter()
    if route == "attention-interface":  # no family spec for llama: transformers' model with the fastattn attention
        with mock.patch.object(families, "find", lambda _: None):
            result = export(ckpt, options)
    else:
        result = export(ckpt, options)
    return result, time.perf_counter() - start


def session(result):
    """An ORT session built as the manifest says (its disabled optimizers), spinning off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(result.output / "model.onnx"), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=result.manifest.session.disabled_optimizers or None)  # fmt: skip


def feeds_for(session, ids: np.ndarray) -> dict[str, np.ndarray]:
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for value in session.get_inputs():
        if value.name.startswith("past_"):
            _, heads, _, size = value.shape
            feeds[value.name] = np.zeros((1, heads, 0, size), np.float32)
    return feeds


def run(plan: dict, work: Path) -> dict:
    import torch

    from benchmarks.machine import describe
    from benchmarks.timing import block_medians

    torch.set_num_threads(THREADS)
    llama, S = plan["llama"], plan["sequence"]
    ckpt = checkpoint(work / "llama", llama)
    ids = np.random.default_rng(0).integers(0, llama["vocab_size"], (1, S)).astype(np.int64)
    rows, sessions, feeds = {}, {}, {}
    for route in ROUTES:
        result, seconds = run_export(ckpt, work / route, route, plan)
        manifest = result.manifest
        sessions[route] = session(result)
        feeds[route] = feeds_for(sessions[route], ids)
        rows[route] = {
            "attention_nodes": len(manifest.attention),
            "kernels": sorted({a.lowering for a in manifest.attention}),
            "fusions": manifest.fusions.get("model", {}),
            "export_seconds": round(seconds, 1),
            "validation_passed": manifest.validation.passed,
            "validation_worst_max_rel": max(o.max_rel for c in manifest.validation.cases for o in c.outputs),
            "cache": bool(manifest.graphs[0].cache),
        }
    logits = {r: sessions[r].run(["logits"], feeds[r])[0] for r in sessions}
    agree = float(np.abs(logits["mapped"] - logits["attention-interface"]).max())
    ms = block_medians({r: (lambda r=r: sessions[r].run(None, feeds[r])) for r in sessions},
                       rounds=plan["rounds"], block=plan["block"])  # fmt: skip
    for route, row in rows.items():
        row["prefill_ms"] = float(f"{ms[route]:.4g}")  # significant digits: a smoke run's figures stay nonzero
    return {"machine": describe(THREADS), "llama": llama, "sequence": S, "batch": 1,
            "statistic": f"median of {plan['rounds']} alternating rounds of {plan['block']}-call blocks, spinning off",
            "logits_max_abs_difference": agree, "rows": rows,
            "prefill_ratio_interface_over_mapped": float(f"{ms['attention-interface'] / ms['mapped']:.3g}")}  # fmt: skip


def markdown(result: dict) -> str:
    m, rows, S = result["machine"], result["rows"], result["sequence"]
    lines = [
        "# Hugging Face models into fastattn: mapped onto fastattn's family vs transformers' AttentionInterface",
        "",
        f"{m['cpu']}, {THREADS} threads; " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()) + ".",
        f"Random LlamaForCausalLM ({', '.join(f'{k} {v}' for k, v in result['llama'].items())}), one checkpoint "
        f"directory, both exported for the CPU target; prefill at batch 1, S={S}: {result['statistic']}.",
        f"Command: `{result['command']}`.",
        "",
        "| route | attention nodes | kernels | fusions | KV cache | export s | prefill ms | validation worst max rel |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for route, r in rows.items():
        fused = ", ".join(f"{k} {v}" for k, v in r["fusions"].items() if v) or "none"
        lines.append(f"| {route} | {r['attention_nodes']} | {', '.join(r['kernels'])} | {fused} | "
                     f"{'yes' if r['cache'] else 'no'} | {r['export_seconds']} | {r['prefill_ms']} | "
                     f"{r['validation_worst_max_rel']:.1e} |")  # fmt: skip
    lines += ["", f"Logits of the two exports differ by at most {result['logits_max_abs_difference']:.1e} at S={S}.",
              f"Prefill ratio attention-interface / mapped: {result['prefill_ratio_interface_over_mapped']:.2f}x."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    args = parser.parse_args(argv)
    out = out_dir(args)
    work = work_dir(args, out, "hf_routes")
    result = run(SMOKE if args.smoke else FULL, work)
    result["command"] = command("hf_routes", *(["--smoke"] if args.smoke else []))
    text = markdown(result)
    write(out, "hf_routes", result, text)
    print(text)


if __name__ == "__main__":
    main()
