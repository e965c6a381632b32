"""The markdown of benchmarks/results/web.md from web.json (see benchmarks/web.py)."""

from __future__ import annotations

import statistics


def _p50(row: dict, phase: str) -> float | None:
    for p in row["phases"]:
        if p["name"] == phase:
            return statistics.median(p["samples_ms"])
    return None


def render(record: dict) -> str:
    seq = record.get("sequence", 128)
    steps = record.get("decode_steps", 16)
    lines = ["# onnxruntime-web (wasm, in Node) beside the CPU EP; ORT-format packages", "",
             f"Command: `{record['command']}`. onnxruntime-web {record['onnxruntime_web']} on Node {record['node']}; "
             f"versions: {', '.join(f'{k} {v}' for k, v in record['versions'].items())}.",
             f"Machine: {record['machine']}.", "",
             f"Batch 1, S = {seq} tokens; decoders: prefill of {seq} tokens, then {steps}-token decode rounds on that cache. "
             "CPU EP rows bind inputs once (IOBinding); wasm rows copy them into the wasm heap at every run, as an app "
             "does. Each configuration in its own worker process. Medians. others' CPU: share of the machine other "
             "processes used during a CPU EP block (the machine was shared; compare rows of one export only).", "",
             "| export | target | prec | provider | threads | prefill / encode ms | decode ms/token | decode tok/s | wasm / cpu | others' CPU |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    cpu = {r["export"]: r for r in record["rows"] if r["provider"] == "cpu"}
    for r in record["rows"]:
        first = r["phases"][0]["name"]
        main, decode = _p50(r, first), _p50(r, "decode")
        ratio = ""
        if r["provider"] != "cpu" and r["export"] in cpu:
            ratio = f"{main / _p50(cpu[r['export']], first):.1f}x"
            if decode:
                ratio += f" / {decode / _p50(cpu[r['export']], 'decode'):.1f}x"
        lines.append(f"| {r['export']} | {r['target']} | {r['precision']} | {r['provider']} | {r['threads']} | "
                     f"{main:.2f} | {decode:.3f} | {1e3 / decode:.0f} |".replace("| None |", "| - |")
                     if decode else
                     f"| {r['export']} | {r['target']} | {r['precision']} | {r['provider']} | {r['threads']} | "
                     f"{main:.2f} | - | - |")  # fmt: skip
        others = r.get("others_cpu")
        lines[-1] += f" {ratio} | {'' if others is None else f'{others:.0%}'} |"
    for u in record["unavailable"]:
        lines += ["", f"{u['provider']}: not available: {u['reason']}"]
    for f in record["failures"]:
        lines += ["", f"failure: {f}"]
    lines += ["", "## Sizes and the minimal-build operator count (`--package ort`)", "",
              "| export | .onnx MB | nodes | .ort MB | nodes in .ort | operators (required_operators.config) | typed |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, e in record["exports"].items():
        o = e["ort_format"]
        if not o:
            continue
        g = o["graphs"][0]
        lines.append(f"| {name} | {e['onnx_bytes'] / 1e6:.2f} | {g['nodes']} | {o['package_bytes'] / 1e6:.2f} | "
                     f"{g['ort_nodes']} | {o['operators']} | {o['typed_operators']} |")  # fmt: skip
    ran = {r["export"] for r in record["rows"] if r["provider"] == "wasm"}
    ops: dict[str, list[str]] = {}
    for name, e in record["exports"].items():
        for op in e["ops"]:
            ops.setdefault(op, []).append(name)
    lines += ["", "## Ops that ran on onnxruntime-web's WebAssembly EP", "",
              "Every op of an export whose wasm row exists ran there (the wasm build has no other EP to fall back to); "
              "ORT's own load-time fusions (DynamicQuantizeMatMul, QuickGelu, ...) ran too.", "",
              "| op | ran on wasm | in exports |", "|---|---|---|"]  # fmt: skip
    for op in sorted(o for o in ops if not o.startswith("ai.onnx::") or o.split("::")[1] in SHOWN_STANDARD):
        where = ops[op]
        lines.append(f"| {op} | {'yes' if any(w in ran for w in where) else 'NO'} | {', '.join(where)} |")
    timed = {rule for e in record["exports"].values() if e["target"] == "wasm" for a in e["lowering"]
             for t in a["timings"].values() for rule in t}  # fmt: skip
    for rule, op in RULE_OPS.items():
        lines.append(f"| {op} | {'yes' if rule in timed else 'not timed'} | one-node `{rule}` candidate of -t wasm |")
    lines += ["", "## Lowering measured on wasm (`-t wasm`: one-node models timed in Node, ms)", ""]
    for name, e in record["exports"].items():
        if e["target"] != "wasm":
            continue
        seen = set()
        for a in e["lowering"]:
            key = (a["kind"], a["kernel"])
            if key in seen:
                continue
            seen.add(key)
            timings = "; ".join(f"{case}: " + ", ".join(f"{rule} {ms:.3f}" for rule, ms in sorted(t.items(), key=lambda x: x[1]))
                                for case, t in a["timings"].items())  # fmt: skip
            lines.append(f"- {name}, {a['kind']} -> **{a['kernel']}** ({timings})")
    return "\n".join(lines) + "\n"


RULE_OPS = {
    "gqa": "com.microsoft::GroupQueryAttention", "mha": "com.microsoft::MultiHeadAttention",
    "onnx-attention": "ai.onnx::Attention (opset 23)", "blocked-local": "ai.onnx::Attention-23 in query blocks (If, Pad)",
    "portable": "fastattn::Attention (model-local ONNX function)",
}
SHOWN_STANDARD = {"Attention", "MatMulInteger", "DynamicQuantizeLinear", "If", "RMSNormalization", "LayerNormalization",
                  "RotaryEmbedding", "Softmax", "Gelu"}
