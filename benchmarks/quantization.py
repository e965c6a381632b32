"""Quantized exports against fp32 and PyTorch eager, on trained models, side by side in one run.

1. A 6-layer d=384 12-head encoder classifier (trained on the stdlib package task):
   fp32 / int8 (dynamic) / int8-static vs PyTorch eager fp32, batch 1, S = 128 and 512.
   Target: int8 >= 6x PyTorch eager at S=128; int8 throughput as a fraction of this machine's
   u8 x s8 GEMM rate (MatMulInteger, measured in the same run) — target >= 60%.
2. A 6-layer d=512 8-head decoder LM (trained, byte-level): prefill (S=128) and per-token
   decode latency (past 128) for fp32 / int8 / int4, and held-out perplexity of each.

Every quantized model went through fastattn's accuracy gate; its figures come from the
manifest. Training is cached (``fastattn.train.cache``), so a second run only measures.

    python -m benchmarks.quantization [--quick]   # writes benchmarks/results/quantization.{json,md}
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from benchmarks.gemm_rate import gemm_rates
from benchmarks.machine import describe
from benchmarks.timing import block_medians
from fastattn.exporter.pipeline import ExportOptions, export, requantize
from fastattn.models import LayerAttention, ModelConfig, checkpoint, preset
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime import load
from fastattn.train.cache import trained

THREADS = 2
# The configs and recipes of the cached reference models (fastattn.train.cache).
ENCODER = preset("encoder").replace(
    name="encoder-6x384", d_model=384, num_heads=12, kv_heads=12, ffn_dim=1536,
    encoder_layers=(LayerAttention(),) * 6, num_labels=8,
)  # fmt: skip
DECODER = preset("default").replace(
    name="lm-6x512", d_model=512, num_heads=8, kv_heads=2, ffn_dim=1536, decoder_layers=(LayerAttention(),) * 6
)
ENCODER_TRAINING = {"steps": 300, "batch": 16, "seq": 128}
DECODER_TRAINING = {"steps": 180, "batch": 8, "seq": 256}


def session(directory: Path) -> ort.InferenceSession:
    """The export's session as fastattn's runtime builds it (manifest session settings applied)."""
    return load(directory, provider="cpu", threads=THREADS).graph("model").session


def encoder_gemms(cfg: ModelConfig, sequence: int) -> tuple[ort.InferenceSession, dict, int]:
    """The encoder's weight GEMMs alone, as int8 MatMulIntegers (QKV, output, FFN in, FFN out per
    layer): the model's int8 work with nothing else. Returns (session, feeds, ops per call)."""
    d, f, layers = cfg.d_model, cfg.ffn_dim, len(cfg.encoder_layers)
    rng = np.random.default_rng(0)
    nodes, inits, ops = [], [helper.make_tensor("zero", TensorProto.UINT8, (), [128])], 0
    for i in range(layers):
        for j, (k, n) in enumerate(((d, 3 * d), (d, d), (d, f), (f, d))):
            name = f"w{i}_{j}"
            inits.append(helper.make_tensor(name, TensorProto.INT8, (k, n),
                                            rng.integers(-127, 128, (k, n), dtype=np.int8).tobytes(), raw=True))  # fmt: skip
            nodes.append(helper.make_node("MatMulInteger", [f"a{k}", name, "zero"], [f"y{i}_{j}"]))
            ops += 2 * sequence * k * n
    inputs = [helper.make_tensor_value_info(f"a{k}", TensorProto.UINT8, (sequence, k)) for k in sorted({d, f})]
    outputs = [helper.make_tensor_value_info(n.output[0], TensorProto.INT32, None) for n in nodes]
    model = helper.make_model(helper.make_graph(nodes, "gemms", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {f"a{k}": rng.integers(0, 256, (sequence, k), dtype=np.uint8) for k in sorted({d, f})}
    return sess, feeds, ops


def exports(ckpt: Path, root: Path, modes: tuple[Mode, ...]) -> dict[str, Path]:
    """fp32 export, then each mode quantized from it (gated on the checkpoint's held-out data)."""
    fp32 = export(ckpt, ExportOptions(root / "fp32", threads=THREADS)).output
    out = {"fp32": fp32}
    for mode in modes:
        out[mode.value] = requantize(fp32, QuantizeStep(QuantOptions(mode)), root / mode.value, threads=THREADS).output
    return out


def figures(directory: Path) -> dict:
    manifest = json.loads((directory / "fastattn.json").read_text())
    size = sum(p.stat().st_size for p in directory.glob("*.onnx*"))
    q = manifest.get("quantization")
    if q is None:
        return {"size_mb": round(size / 1e6, 2)}
    return {"size_mb": round(size / 1e6, 2), "gate": "passed" if q["passed"] else "FAILED", "data": q["data"],
            "settings": q["settings"], "kept_float": len(q["kept"]),
            **{f"{name}_{k}": round(v, 5) for name, f in q["figures"].items() for k, v in f.items()}}  # fmt: skip


def bench_encoder(root: Path, sequences: tuple[int, ...], rounds: int) -> dict:
    ckpt = trained("classifier", ENCODER, **ENCODER_TRAINING)
    model = checkpoint.load(ckpt)
    dirs = exports(ckpt, root / "encoder", (Mode.INT8, Mode.INT8_STATIC))
    sessions = {name: session(d) for name, d in dirs.items()}
    rows = []
    for S in sequences:
        ids = torch.randint(0, ENCODER.vocab_size, (1, S))
        mask = torch.ones(1, S, dtype=torch.long)
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}

        def eager():
            with torch.inference_mode():
                model(ids, mask)

        gemm, gemm_feeds, ops = encoder_gemms(ENCODER, S)
        contenders = {"pytorch_eager": eager, **{n: (lambda s=s: s.run(None, feeds)) for n, s in sessions.items()},
                      "gemms_alone": lambda: gemm.run(None, gemm_feeds)}  # fmt: skip
        ms = block_medians(contenders, rounds=rounds)
        row = {"sequence": S, **{f"{k}_ms": round(v, 3) for k, v in ms.items()}}
        for name in sessions:
            row[f"{name}_speedup_vs_eager"] = round(ms["pytorch_eager"] / ms[name], 2)
        row["gemm_gops_alone"] = round(ops / ms["gemms_alone"] / 1e6, 1)
        row["int8_gemm_gops"] = round(ops / ms["int8"] / 1e6, 1)
        rows.append(row)
        print(row)
    return {"config": ENCODER.to_dict(), "training": ENCODER_TRAINING, "rows": rows,
            "models": {name: figures(d) for name, d in dirs.items()}}  # fmt: skip


def bench_decoder(root: Path, prompt: int, rounds: int) -> dict:
    ckpt = trained("lm", DECODER, **DECODER_TRAINING)
    model = checkpoint.load(ckpt)
    dirs = exports(ckpt, root / "decoder", (Mode.INT8, Mode.INT4))
    sessions = {name: session(d) for name, d in dirs.items()}
    cfg, layers = DECODER, len(DECODER.decoder_layers)
    ids = torch.randint(0, cfg.vocab_size, (1, prompt))
    empty = np.zeros((1, cfg.kv_heads, 0, cfg.head_size), np.float32)
    prefill = {"input_ids": ids.numpy(), "attention_mask": np.ones((1, prompt), np.int64),
               **{f"past_{kind}_{i}": empty for i in range(layers) for kind in ("key", "value")}}  # fmt: skip
    names = [o.name for o in sessions["fp32"].get_outputs()]
    presents = dict(zip(names, sessions["fp32"].run(None, prefill)))
    step = {"input_ids": np.array([[7]], np.int64), "attention_mask": np.ones((1, prompt + 1), np.int64),
            **{f"past_{kind}_{i}": presents[f"present_{kind}_{i}"] for i in range(layers) for kind in ("key", "value")}}  # fmt: skip
    with torch.inference_mode():
        _, past = model(ids, torch.ones(1, prompt, dtype=torch.long), [])
    one, step_mask = torch.tensor([[7]]), torch.ones(1, prompt + 1, dtype=torch.long)

    def eager_prefill():
        with torch.inference_mode():
            model(ids, torch.ones(1, prompt, dtype=torch.long), [])

    def eager_decode():
        with torch.inference_mode():
            model(one, step_mask, past)

    result = {}
    for phase, feeds, eager in (("prefill", prefill, eager_prefill), ("decode", step, eager_decode)):
        contenders = {"pytorch_eager": eager, **{n: (lambda s=s, f=feeds: s.run(None, f)) for n, s in sessions.items()}}
        result[phase] = {k: round(v, 3) for k, v in block_medians(contenders, rounds=rounds).items()}
        print(phase, result[phase])
    return {"config": cfg.to_dict(), "training": DECODER_TRAINING, "prompt": prompt, "ms": result,
            "models": {name: figures(d) for name, d in dirs.items()}}  # fmt: skip


def markdown(result: dict) -> str:
    enc, dec, machine = result["encoder"], result["decoder"], result["machine"]
    peak = max(r["gops"] for r in result["gemm"])
    shapes = ", ".join(f"{r['m']}x{r['k']}x{r['n']} {r['gops']:.0f}" for r in result["gemm"])
    lines = [
        "# Quantized exports vs fp32 and PyTorch eager (trained models, accuracy-gated)",
        "",
        f"{machine['cpu']}, {THREADS} threads, batch 1, CPU EP; onnxruntime {machine['versions'].get('onnxruntime')}, "
        f"torch {machine['versions'].get('torch')}. Median of alternating blocks (benchmarks/timing.py).",
        "",
        f"u8 x s8 GEMM rate (one MatMulInteger, same run): best {peak:.0f} GOPS ({shapes}).",
        "",
        "## Encoder: 6 layers, d=384, 12 heads, classifier (stdlib package of a snippet)",
        "",
        "| model | size MB | accuracy | fp32 accuracy, same data | top-1 agreement | cosine vs float | gate | data |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, f in enc["models"].items():
        lines.append(f"| {name} | {f['size_mb']} | {_pct(f.get('quantized_accuracy'))} | {_pct(f.get('float_accuracy'))} "
                     f"| {f.get('quantized_agreement', '-')} | {f.get('quantized_cosine', '-')} | {f.get('gate', '-')} "
                     f"| {f.get('data', '-')} |")  # fmt: skip
    lines += ["", "int8-static calibrates on the first half of the held-out set and is scored on the second.", "",
              "| S | PyTorch eager ms | fp32 ms | int8 ms | int8-static ms | int8 vs eager | its GEMMs alone ms "
              "| int8 model GOPS | GEMMs alone GOPS | model / GEMM rate |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in enc["rows"]:
        lines.append(
            f"| {r['sequence']} | {r['pytorch_eager_ms']} | {r['fp32_ms']} | {r['int8_ms']} | {r['int8-static_ms']} | "
            f"{r['int8_speedup_vs_eager']}x | {r['gemms_alone_ms']} | {r['int8_gemm_gops']} | {r['gemm_gops_alone']} | "
            f"{r['int8_gemm_gops'] / r['gemm_gops_alone']:.0%} |"
        )
    lines += ["", "Targets: int8 >= 6x PyTorch eager at S=128; int8 throughput >= 60% of the GEMM rate. "
              "'GEMMs alone' runs the model's 24 weight GEMMs as bare MatMulIntegers in the same rounds; "
              "'model GOPS' divides the same int8 work by the whole model's time, so every non-GEMM op "
              "(attention, norms, GELU, activation quantization) counts against it.", "",
              "## Decoder LM: 6 layers, d=512, 8 heads (2 KV heads), byte-level", "",
              f"Prefill {dec['prompt']} tokens; decode one token onto a {dec['prompt']}-token cache.", "",
              "| model | size MB | perplexity | vs fp32 | prefill ms | decode ms/token | tokens/s |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    float_ppl = dec["models"]["int8"].get("float_perplexity")
    for name in ("pytorch_eager", *dec["models"]):
        f = dec["models"].get(name, {})
        ppl = f.get("quantized_perplexity", float_ppl if name != "pytorch_eager" else f.get("pytorch_perplexity"))
        rel = f"{ppl / float_ppl - 1:+.2%}" if ppl and float_ppl else "-"
        decode = dec["ms"]["decode"][name]
        lines.append(f"| {name} | {f.get('size_mb', '-')} | {ppl or '-'} | {rel} | {dec['ms']['prefill'][name]} | "
                     f"{decode} | {1000 / decode:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _pct(x) -> str:
    return f"{x:.2%}" if isinstance(x, float) else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer rounds, S=128 only; results not recorded.")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    rounds = 3 if args.quick else 7
    with tempfile.TemporaryDirectory() as tmp:
        result = {"machine": describe(THREADS), "gemm": gemm_rates(THREADS)}
        result["encoder"] = bench_encoder(Path(tmp), (128,) if args.quick else (128, 512), rounds)
        result["decoder"] = bench_decoder(Path(tmp), 128, rounds)
    if args.quick:
        print(markdown(result))
        return
    write(result)


def write(result: dict) -> None:
    out = Path(__file__).parent / "results"
    (out / "quantization.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "quantization.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
