"""Attention lowerings side by side on whole (small) models, 2 threads, batch 1.

1. Sliding window, W=256: a 2-layer decoder (d=512, 8 heads x 64, all layers sliding),
   prefill at S = 2k..16k, lowered to blocked-local vs GQA ``local_window_size``.
   Targets (issue 3): blocked-local >= 6x faster than GQA at S=8192; t(16384)/t(8192) <= 2.3.
2. Full causal: a 1-layer decoder (8 heads, 2 kv heads, 64), prefill S=4096 and decode
   (S=1, past 2048): each candidate forced, and the choice fastattn makes by measurement
   (profile prefill=1x4096, decode=1x1+2048). Target: the chosen one is the fastest.

    python -m benchmarks.lowering      # writes benchmarks/results/lowering.{json,md}
    python -m benchmarks.lowering --smoke --out DIR     # tiny sizes (benchmarks/record.py)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from benchmarks.machine import describe
from benchmarks.record import add_options, command, out_dir, write
from benchmarks.timing import block_medians
from fastattn.exporter.capture import capture
from fastattn.exporter.lowering.apply import Choice, lower
from fastattn.exporter.lowering.choose import LoweringOptions, find_sites, plan
from fastattn.exporter.lowering.measure import ShapeCase, feeds_for, single_site_model
from fastattn.exporter.lowering.registry import by_name
from fastattn.families.fastattn.graphs import model_graphs
from fastattn.models import LayerAttention, ModelConfig, build
from fastattn.targets import Target

THREADS = 2
SLIDING = ModelConfig(name="sliding-2x512", vocab_size=256, d_model=512, num_heads=8, kv_heads=8, ffn_dim=1024,
                      decoder_layers=(LayerAttention.parse("sliding:256"),) * 2)  # fmt: skip
CAUSAL = ModelConfig(name="causal-1x512", vocab_size=256, d_model=512, num_heads=8, kv_heads=2, ffn_dim=1024,
                     decoder_layers=(LayerAttention(),))  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    sliding: ModelConfig = SLIDING
    causal: ModelConfig = CAUSAL
    sequences: tuple[int, ...] = (2048, 4096, 8192, 16384)  # sliding-window prefill
    causal_profile: tuple[ShapeCase, ...] = (ShapeCase("prefill", 1, 4096), ShapeCase("decode", 1, 1, past=2048))
    sliding_timing: tuple[int, int] = (3, 3)  # (rounds, block) of benchmarks/timing.py
    causal_timing: tuple[int, int] = (5, 5)
    repeats: int = 10  # per lowering candidate while fastattn chooses
    digits: int = 1  # sliding-window milliseconds are rounded to this many decimals


# One tiny model for both parts (every contender takes a sliding window): one capture, not two.
_TINY = SLIDING.replace(name="sliding-smoke", vocab_size=64, d_model=32, num_heads=4, kv_heads=2, ffn_dim=64,
                        decoder_layers=(LayerAttention.parse("sliding:16"),))  # fmt: skip
SMOKE = Sizes(
    sliding=_TINY, causal=_TINY,
    sequences=(64, 128), causal_profile=(ShapeCase("prefill", 1, 64), ShapeCase("decode", 1, 1, past=32)),
    sliding_timing=(1, 1), causal_timing=(1, 1), repeats=1, digits=3,
)  # fmt: skip


def session(model: ir.Model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    return ort.InferenceSession(ir.serde.serialize_model(model).SerializeToString(), options,
                                providers=["CPUExecutionProvider"])  # fmt: skip


def forced(base: ir.Model, rule: str) -> ir.Model:
    model = ir.serde.deserialize_model(ir.serde.serialize_model(base))
    sites = find_sites(model)
    lower(model, {name: Choice(by_name(rule)) for name in sites}, sites)
    return model


def feeds(cfg: ModelConfig, sequence: int, past: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {"input_ids": rng.integers(0, cfg.vocab_size, (1, sequence)), "attention_mask": np.ones((1, past + sequence), np.int64)}
    for i in range(len(cfg.decoder_layers)):
        for kind in ("key", "value"):
            out[f"past_{kind}_{i}"] = rng.standard_normal((1, cfg.kv_heads, past, cfg.head_size)).astype(np.float32)
    return out


def sliding_rows(base: ir.Model, sizes: Sizes) -> list[dict]:
    sessions = {rule: session(forced(base, rule)) for rule in ("blocked-local", "gqa")}
    rounds, block = sizes.sliding_timing
    rows = []
    for S in sizes.sequences:
        f = feeds(sizes.sliding, S, 0)
        ms = block_medians({rule: (lambda s=s: s.run(None, f)) for rule, s in sessions.items()}, rounds=rounds, block=block)
        rows.append({"sequence": S, **{k: round(v, sizes.digits) for k, v in ms.items()},
                     "gqa_over_blocked": round(ms["gqa"] / ms["blocked-local"], 2)})  # fmt: skip
        print(rows[-1])
    return rows


def sliding_layer_rows(base: ir.Model, sizes: Sizes) -> list[dict]:
    """The attention alone: one sliding node (same shapes) lowered each way, outputs cross-checked."""
    site = next(iter(find_sites(base).values()))
    sessions = {}
    for rule in ("blocked-local", "gqa"):
        model = single_site_model(site, base.opset_imports[""])
        sites = find_sites(model)
        lower(model, {name: Choice(by_name(rule)) for name in sites}, sites)
        sessions[rule] = session(model)
    rounds, block = sizes.sliding_timing
    rows = []
    for S in sizes.sequences:
        f = feeds_for(site, ShapeCase("prefill", 1, S, past=0))
        outs = {rule: s.run(None, f)[0] for rule, s in sessions.items()}
        error = float(np.abs(outs["blocked-local"] - outs["gqa"]).max())
        ms = block_medians({rule: (lambda s=s: s.run(None, f)) for rule, s in sessions.items()}, rounds=rounds, block=block)
        rows.append({"sequence": S, **{k: round(v, sizes.digits) for k, v in ms.items()},
                     "gqa_over_blocked": round(ms["gqa"] / ms["blocked-local"], 2), "max_abs_difference": error})  # fmt: skip
        print("layer", rows[-1])
    return rows


def captured(config: ModelConfig, cache: dict[str, ir.Model]) -> ir.Model:
    """The captured graph of ``config`` (captured once per config)."""
    if config.name not in cache:
        cache[config.name] = capture(model_graphs(build(config))[0])
    return cache[config.name]


def causal_rows(base: ir.Model, sizes: Sizes) -> dict:
    profile = sizes.causal_profile
    chosen_model = ir.serde.deserialize_model(ir.serde.serialize_model(base))
    choices, sites = plan(chosen_model, LoweringOptions(Target.CPU, profile, repeats=sizes.repeats, threads=THREADS))
    lower(chosen_model, choices, sites)
    choice = next(iter(choices.values()))
    contenders = {rule: session(forced(base, rule)) for rule in ("portable", "gqa", "mha", "onnx-attention")}
    contenders[f"chosen ({choice.label})"] = session(chosen_model)
    result = {"choice": choice.label, "measured_while_choosing": choice.timings, "cases": {},
              "shapes": {case.name: [case.sequence, case.past] for case in profile}}  # fmt: skip
    rounds, block = sizes.causal_timing
    for case in profile:
        f = feeds(sizes.causal, case.sequence, case.past)
        ms = block_medians({name: (lambda s=s: s.run(None, f)) for name, s in contenders.items()}, rounds=rounds, block=block)
        result["cases"][case.name] = {k: round(v, 3) for k, v in ms.items()}
        print(case.name, result["cases"][case.name])
    return result


def run(sizes: Sizes) -> dict:
    graphs: dict[str, ir.Model] = {}
    sliding_base = captured(sizes.sliding, graphs)
    layer, sliding = sliding_layer_rows(sliding_base, sizes), sliding_rows(sliding_base, sizes)
    causal = causal_rows(captured(sizes.causal, graphs), sizes)
    return {"machine": describe(THREADS), "sliding_layer": layer, "sliding": {"config": sizes.sliding.to_dict(), "rows": sliding},
            "causal": {"config": sizes.causal.to_dict(), **causal}}  # fmt: skip


def markdown(result: dict) -> str:
    layer, sliding, causal = result["sliding_layer"], result["sliding"]["rows"], result["causal"]
    sc, cc = result["sliding"]["config"], causal["config"]
    window = sc["decoder_layers"][0].split(":")[1]
    head = sc["d_model"] // sc["num_heads"]
    prefill, decode = causal["cases"]["prefill"], causal["cases"]["decode"]
    (short, long_), (layer_short, layer_long) = (sliding[-2], sliding[-1]), (layer[-2], layer[-1])
    shapes = causal.get("shapes", {"prefill": [4096, 0], "decode": [1, 2048]})
    cases = {name: f"S={s}" + (f", past {p}" if p else "") for name, (s, p) in shapes.items()}
    return "\n".join([
        "# Attention lowerings on whole models (CPU EP)",
        "",
        f"{result['machine']['cpu']}, {THREADS} threads, batch 1, fp32, onnxruntime "
        f"{result['machine']['versions']['onnxruntime']}; median of alternating blocks (benchmarks/timing.py).",
        "",
        f"## Sliding window W={window}, one attention layer ({sc['num_heads']} heads x {head}, causal), prefill",
        "",
        "| S | blocked-local (ms) | GQA local_window_size (ms) | GQA / blocked | max abs difference |",
        "|---|---|---|---|---|",
        *[f"| {r['sequence']} | {r['blocked-local']} | {r['gqa']} | {r['gqa_over_blocked']}x | {r['max_abs_difference']:.1e} |"
          for r in layer],  # fmt: skip
        "",
        f"Scaling of blocked-local: t({layer_long['sequence']})/t({layer_short['sequence']}) = "
        f"{layer_long['blocked-local'] / layer_short['blocked-local']:.2f} (target <= 2.3); GQA / blocked at "
        f"{layer_short['sequence']} = {layer_short['gqa_over_blocked']}x (target >= 6x).",
        "",
        f"## Sliding window W={window}, whole {len(sc['decoder_layers'])}-layer decoder d={sc['d_model']} "
        f"({sc['num_heads']} heads x {head}, FFN {sc['ffn_dim']}), prefill",
        "",
        "The projections, FFN and LM head cost the same under both lowerings, so the ratio is smaller.",
        "",
        "| S | blocked-local (ms) | GQA local_window_size (ms) | GQA / blocked |",
        "|---|---|---|---|",
        *[f"| {r['sequence']} | {r['blocked-local']} | {r['gqa']} | {r['gqa_over_blocked']}x |" for r in sliding],
        "",
        f"Scaling of blocked-local: t({long_['sequence']})/t({short['sequence']}) = "
        f"{long_['blocked-local'] / short['blocked-local']:.2f} (target <= 2.3); GQA / blocked at {short['sequence']} = "
        f"{short['gqa_over_blocked']}x (target >= 6x).",
        "",
        f"## {'Full causal' if cc['decoder_layers'][0] == 'full' else cc['decoder_layers'][0]}, {len(cc['decoder_layers'])}-layer decoder ({cc['num_heads']} heads, {cc['kv_heads']} kv heads, "
        f"{cc['d_model'] // cc['num_heads']}); fastattn chose `{causal['choice']}`",
        "",
        f"| contender | prefill {cases['prefill']} (ms) | decode {cases['decode']} (ms) |",
        "|---|---|---|",
        *[f"| {name} | {prefill[name]} | {decode[name]} |" for name in prefill],
    ]) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    args = parser.parse_args(argv)
    out = out_dir(args)
    sizes = SMOKE if args.smoke else Sizes()
    result = run(sizes)
    result["command"] = command("lowering", *(["--smoke"] if args.smoke else []))
    write(out, "lowering", result, markdown(result))


if __name__ == "__main__":
    main()
