"""Quantized exports against fp32 and PyTorch eager, on trained models, side by side in one run.

1. A 6-layer d=384 12-head encoder classifier (trained on the stdlib package task):
   fp32 / int8 (dynamic) / int8-static vs PyTorch eager fp32, batch 1, S = 128 and 512.
   Target: int8 >= 6x PyTorch eager at S=128; int8 throughput as a fraction of this machine's
   u8 x s8 GEMM rate (MatMulInteger, measured in the same run) — target >= 60%.
2. A 6-layer d=512 8-head decoder LM (trained, byte-level): prefill (S=128) and per-token
   decode latency (past 128) for fp32 / int8 / int4, and held-out perplexity of each.

Every quantized model went through fastattn's accuracy gate; its figures come from the
manifest. Training is cached (``fastattn.train.cache``), so a second run only measures.

    python -m benchmarks.quantization     # writes benchmarks/results/quantization.{json,md}
    python -m benchmarks.quantization --smoke --out DIR    # tiny models, tiny training (benchmarks/record.py)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from benchmarks.gemm_rate import SHAPES, gemm_rates
from benchmarks.machine import describe
from benchmarks.record import add_options, command, out_dir, smoke_cache, work_dir, write
from benchmarks.timing import block_medians
from fastattn.exporter.lowering.measure import ShapeCase
from fastattn.exporter.pipeline import ExportOptions, export, requantize
from fastattn.models import LayerAttention, ModelConfig, checkpoint, preset
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.gates import Gate
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime import load
from fastattn.train.cache import trained
from fastattn.train.trainer import TrainOptions

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


@dataclass(frozen=True)
class Recipe:
    """The models, their training, the sizes measured, and the exports' lowering measurement."""

    encoder: ModelConfig = ENCODER
    decoder: ModelConfig = DECODER
    encoder_training: dict = field(default_factory=lambda: ENCODER_TRAINING)
    decoder_training: dict = field(default_factory=lambda: DECODER_TRAINING)
    sequences: tuple[int, ...] = (128, 512)
    prompt: int = 128
    rounds: int = 7
    gemm_shapes: tuple[tuple[int, int, int], ...] = SHAPES
    export: dict = field(default_factory=dict)  # ExportOptions: lowering profile and repeats
    gate: Gate | None = None  # None: each mode's own gate


# Tiny models trained for a few steps: the gates are relaxed, as they would judge noise.
SMOKE_TRAINING = {"steps": 8, "batch": 4, "seq": 32, "options": TrainOptions(eval_samples=8, log_every=1000)}
SMOKE = Recipe(
    encoder=ENCODER.replace(name="encoder-smoke", d_model=32, num_heads=4, kv_heads=4, ffn_dim=64,
                            encoder_layers=(LayerAttention(),), max_positions=64),
    decoder=DECODER.replace(name="lm-smoke", d_model=32, num_heads=4, kv_heads=2, ffn_dim=64,
                            decoder_layers=(LayerAttention(),)),
    encoder_training=SMOKE_TRAINING, decoder_training=SMOKE_TRAINING, sequences=(32,), prompt=16, rounds=1,
    gemm_shapes=((32, 32, 64),),
    export={"repeats": 1, "profile": (ShapeCase("prefill", 1, 32), ShapeCase("decode", 1, 1, past=32))},
    gate=Gate(max_ppl_increase=1.0, min_cosine=0.0, max_accuracy_drop=1.0),
)  # fmt: skip


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


def exports(ckpt: Path, root: Path, modes: tuple[Mode, ...], recipe: Recipe) -> dict[str, Path]:
    """fp32 export, then each mode quantized from it (gated on the checkpoint's held-out data)."""
    fp32 = export(ckpt, ExportOptions(root / "fp32", threads=THREADS, **recipe.export)).output
    out = {"fp32": fp32}
    for mode in modes:
        step = QuantizeStep(QuantOptions(mode), gate=recipe.gate)
        out[mode.value] = requantize(fp32, step, root / mode.value, threads=THREADS).output
    return out


def figures(directory: Path) -> dict:
    """Size, and what the manifest records about the quantization (figures the task has, not its nulls)."""
    manifest = json.loads((directory / "fastattn.json").read_text())
    size = sum(p.stat().st_size for p in directory.glob("*.onnx*"))
    q = manifest.get("quantization")
    if q is None:
        return {"size_mb": round(size / 1e6, 2)}
    return {"size_mb": round(size / 1e6, 2), "gate": "passed" if q["passed"] else "FAILED", "data": q["data"],
            "settings": q["settings"], "kept_float": len(q["kept"]),
            **{f"{name}_{k}": round(v, 5) for name, f in q["figures"].items() for k, v in f.items() if v is not None}}  # fmt: skip


def bench_encoder(root: Path, recipe: Recipe) -> dict:
    cfg, rounds = recipe.encoder, recipe.rounds
    ckpt = trained("classifier", cfg, **recipe.encoder_training)
    model = checkpoint.load(ckpt)
    dirs = exports(ckpt, root / "encoder", (Mode.INT8, Mode.INT8_STATIC), recipe)
    sessions = {name: session(d) for name, d in dirs.items()}
    rows = []
    for S in recipe.sequences:
        ids = torch.randint(0, cfg.vocab_size, (1, S))
        mask = torch.ones(1, S, dtype=torch.long)
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}

        def eager():
            with torch.inference_mode():
                model(ids, mask)

        gemm, gemm_feeds, ops = encoder_gemms(cfg, S)
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
    return {"config": cfg.to_dict(), "training": _training(recipe.encoder_training), "rows": rows,
            "models": {name: figures(d) for name, d in dirs.items()}}  # fmt: skip


def _training(recipe: dict) -> dict:
    return {k: v for k, v in recipe.items() if k != "options"}


def bench_decoder(root: Path, recipe: Recipe) -> dict:
    cfg, prompt, rounds = recipe.decoder, recipe.prompt, recipe.rounds
    ckpt = trained("lm", cfg, **recipe.decoder_training)
    model = checkpoint.load(ckpt)
    dirs = exports(ckpt, root / "decoder", (Mode.INT8, Mode.INT4), recipe)
    sessions = {name: session(d) for name, d in dirs.items()}
    layers = len(cfg.decoder_layers)
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
    return {"config": cfg.to_dict(), "training": _training(recipe.decoder_training), "prompt": prompt, "ms": result,
            "models": {name: figures(d) for name, d in dirs.items()}}  # fmt: skip


def markdown(result: dict) -> str:
    enc, dec, machine = result["encoder"], result["decoder"], result["machine"]
    ec, dc = enc["config"], dec["config"]
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
        f"## Encoder: {len(ec['encoder_layers'])} layers, d={ec['d_model']}, {ec['num_heads']} heads, classifier "
        "(stdlib package of a snippet)",
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
              f"'GEMMs alone' runs the model's {4 * len(ec['encoder_layers'])} weight GEMMs as bare MatMulIntegers in the same rounds; "
              "'model GOPS' divides the same int8 work by the whole model's time, so every non-GEMM op "
              "(attention, norms, GELU, activation quantization) counts against it.", "",
              f"## Decoder LM: {len(dc['decoder_layers'])} layers, d={dc['d_model']}, {dc['num_heads']} heads "
              f"({dc['kv_heads']} KV heads), byte-level", "",
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    args = parser.parse_args(argv)
    out = out_dir(args)
    recipe = SMOKE if args.smoke else Recipe()
    if args.smoke:
        smoke_cache(work_dir(args, out, "quantization"))
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"machine": describe(THREADS), "gemm": gemm_rates(THREADS, recipe.gemm_shapes)}
        result["encoder"] = bench_encoder(Path(tmp), recipe)
        result["decoder"] = bench_decoder(Path(tmp), recipe)
    result["command"] = command("quantization", *(["--smoke"] if args.smoke else []))
    write(out, "quantization", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
