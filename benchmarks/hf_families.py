"""Every registered Hugging Face family on its tiny random checkpoint (tests/hf/checkpoints.py: 2 layers,
hidden 64, a BPE or WordPiece tokenizer trained on three stdlib files): attention nodes, export time,
greedy tokens against transformers' generate, and the int8 / int4 gates on held-out text.

    python -m benchmarks.hf_families    # writes benchmarks/results/hf_families.{json,md}

Random weights: the gate figures say how far quantization moves a model that knows nothing
(perplexities near or above the vocabulary size), not what it costs a trained one.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.machine import describe
from fastattn.errors import ValidationFailed
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.families.hf import architectures as families
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime import load, schema
from fastattn.runtime.manifest import Manifest
from tests.hf import reference
from tests.hf.checkpoints import BUILDERS

THREADS, NEW = 2, 64


def gate(checkpoint: Path, out: Path, mode: Mode) -> dict:
    """The quantized export's gate figures (kept in <out>.rejected when validation or the gate fails)."""
    try:
        manifest = export(checkpoint, ExportOptions(out, threads=THREADS, quantize=QuantizeStep(QuantOptions(mode)))).manifest
        outcome = "exported"
    except ValidationFailed as e:
        manifest = Manifest.load(out.with_name(out.name + ".rejected"))
        outcome = "rejected: " + e.what.split(":")[0]
    q = schema.dump(manifest.quantization)  # records as plain data
    figures = q["figures"]
    return {"outcome": outcome, "gate": "passed" if q["passed"] else "failed", "data": q["data"],
            "float": figures["float"], "quantized": figures["quantized"], "kept": len(q["kept"]),
            "quantized_weights": len(q["quantized"])}  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for family in families.REGISTRY:
            name = family.name
            ckpt = BUILDERS[name](root / "ckpt" / name)
            start = time.perf_counter()
            result = export(ckpt, ExportOptions(root / "out" / name, threads=THREADS))
            row = {"export_s": round(time.perf_counter() - start, 1), "task": result.manifest.hf.task,
                   "attention_nodes": len(result.manifest.attention),
                   "attention": [f"{a.graph}:{a.kind}{':' + str(a.window) if a.window else ''}:{a.lowering}"
                                 for a in result.manifest.attention],
                   "validation_worst_max_abs": max(o.max_abs for c in result.validation.cases for o in c.outputs)}  # fmt: skip
            if family.arch.value != "encoder":
                seq2seq = family.arch.value == "encoder_decoder"
                hf = reference.seq2seq_lm(ckpt) if seq2seq else reference.causal_lm(ckpt)
                want = reference.greedy(hf, reference.PROMPTS, NEW, pad=1, seq2seq=seq2seq)
                got = load(result.output).generate(reference.PROMPTS, NEW, stop_ids=[]).tokens
                same = sum(a == b for g, w in zip(got, want) for a, b in zip(g, w))
                row["greedy_equal_tokens"] = f"{same}/{sum(map(len, want))}"
            for mode in (Mode.INT8, Mode.INT4):
                row[mode.value] = gate(ckpt, root / "out" / f"{name}-{mode.value}", mode)
            rows[name] = row
            print(name, json.dumps(row)[:300], flush=True)
    out = Path(__file__).parent / "results"
    result = {"machine": describe(THREADS), "new_tokens": NEW, "prompts": reference.PROMPTS, "rows": rows}
    (out / "hf_families.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        "# Hugging Face families on tiny random checkpoints: attention nodes, export time, greedy tokens, gates",
        "",
        f"{m['cpu']}, {THREADS} ONNX Runtime threads; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + ". Checkpoints: tests/hf/checkpoints.py (2 layers, hidden 64, weights N(0, 0.2), tokenizers trained on three "
        "stdlib files). Greedy: 64 new tokens for 3 prompts in one padded batch, no EOS, against transformers' "
        "`generate(do_sample=False)`. Gates: held-out stdlib text tokenized by each checkpoint's tokenizer; int8 "
        "dynamic, int4 MatMulNBits block 32. Command: `python -m benchmarks.hf_families`.",
        "",
        "| family | task | attention nodes | export s | greedy tokens equal | int8: gate figures | int4: gate figures |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(g: dict) -> str:
        f, q = g["float"], g["quantized"]
        if "perplexity" in q:
            text = f"ppl {f['perplexity']:.1f} -> {q['perplexity']:.1f}, top-1 {q['agreement']:.3f}"
        else:
            text = f"pooled cosine {q['cosine']:.5f} (least {q['cosine_min']:.5f})"
        return f"{text}; gate {g['gate']}, {g['kept']} kept; {g['outcome']}"

    for name, r in rows.items():
        lines.append(f"| {name} | {r['task']} | {r['attention_nodes']} | {r['export_s']} | {r.get('greedy_equal_tokens', '-')} "
                     f"| {cell(r['int8'])} | {cell(r['int4'])} |")  # fmt: skip
    lines += ["", "Attention per node (graph:kind[:window]:kernel):", ""]
    lines += [f"- {name}: {', '.join(r['attention'])}" for name, r in rows.items()]
    (out / "hf_families.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
