"""The measurement behind ``--kv-buffer``: GenAI's decode path rebuilt step by step from a fastattn export.

ONNX Runtime GenAI decodes the 6x512 Llama shape of benchmarks/genai.py in 0.49 ms/token
(int4) where fastattn's runtime takes ~0.63: under one loop the two graphs are equally fast
(genai_graphs.md), so the difference is how GenAI drives its graph. This script rebuilds that
path from a fastattn export, one step at a time, and times each in one Python loop (the
export mode ``--kv-buffer`` now builds the last row's graph itself; genai.md times it):

1. export the same checkpoint with every attention lowered to ``GroupQueryAttention`` (``only="gqa"``);
2. drop GQA's padding guard: each ``If(guard, GQA, portable)`` becomes its GQA branch (so only
   unpadded rows are exact, GQA's own convention is right padding);
3. fold the rotary of q and k and the QKV ``Split`` into the GQA node (``do_rotary`` with
   cos/sin tables of ``max_positions`` rows, packed QKV), as GenAI's builder emits it;
4. decode with the cache presents bound as the next pasts ("plain") or with one max-length
   buffer per cache bound as both past and present ("shared", ORT's shared past/present buffer).

Rows: today's export (mha path) plain; GQA + guard dropped, plain and shared; + rotary folded,
plain and shared. The fp32 transformed graph is checked against the export (logits at prefill
and one decode step) and shared against plain decoding (the same greedy tokens).

    python -m benchmarks.gqa_fast_path      # -> benchmarks/results/gqa_fast_path.{json,md}
    python -m benchmarks.gqa_fast_path --smoke --out DIR    # a tiny model (benchmarks/record.py)

The checkpoint and the exports of "today" are benchmarks/genai.py's (build/genai/fastattn/: built
here when missing, the same way; the GenAI environment is not needed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from benchmarks.genai import SMOKE_SHAPE, Shape, fastattn_models
from benchmarks.machine import describe
from benchmarks.record import add_options, command, out_dir, work_dir, write

THREADS, NEW, ROUNDS = 2, 128, 4
SMOKE_NEW, SMOKE_ROUNDS = 4, 1


# -- building ---------------------------------------------------------------------------------------


def export_gqa(source: Path, work: Path) -> dict[str, Path]:
    """fp32 and int4 exports of the GenAI benchmark's fastattn checkpoint, attention lowered to GQA."""
    from fastattn.exporter.pipeline import ExportOptions, export, requantize
    from fastattn.quantize import Mode, QuantOptions
    from fastattn.quantize.step import QuantizeStep

    ckpt = source / "model.pt"
    out = {"fp32": work / "gqa-fp32", "int4": work / "gqa-int4"}
    if not (out["fp32"] / "fastattn.json").is_file():
        export(ckpt, ExportOptions(out["fp32"], force=True, threads=THREADS, only="gqa"))
    if not (out["int4"] / "fastattn.json").is_file():
        requantize(out["fp32"], QuantizeStep(QuantOptions(Mode.INT4)), out["int4"])
    return out


def drop_guards(graph: onnx.GraphProto) -> int:
    """Replace each ``If`` whose then-branch holds a GQA node by that branch's nodes."""
    count = 0
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if node.op_type != "If":
            continue
        then = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "then_branch")
        if not any(n.op_type == "GroupQueryAttention" for n in then.node):
            continue
        # the branch's own values and nodes get the If's name as prefix (branches repeat names)
        local = {o: f"{node.name}/{o}" for n in then.node for o in n.output if o}
        inlined = []
        for n in then.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copy.name = f"{node.name}/{n.name}"
            copy.input[:] = [local.get(i, i) for i in n.input]
            copy.output[:] = [local.get(o, o) for o in n.output]
            inlined.append(copy)
        inlined += [helper.make_node("Identity", [local.get(o.name, o.name)], [target], name=f"{node.name}/out{i}")
                    for i, (o, target) in enumerate(zip(then.output, node.output, strict=True))]  # fmt: skip
        del graph.node[index]
        for offset, new in enumerate(inlined):
            graph.node.insert(index + offset, new)
        count += 1
    return count


def fold_rotary(graph: onnx.GraphProto, config: dict) -> int:
    """GQA(Rotary(Split(qkv)[0]), Rotary(Split(qkv)[1]), Split(qkv)[2]) -> GQA(qkv, do_rotary=1)."""
    head = config["d_model"] // config["num_heads"]
    inv = 1.0 / config["rope_theta"] ** (np.arange(0, head, 2, dtype=np.float32) / head)
    angles = np.arange(config["max_positions"], dtype=np.float32)[:, None] * inv
    graph.initializer.extend([numpy_helper.from_array(np.cos(angles), "fast_path_cos"),
                              numpy_helper.from_array(np.sin(angles), "fast_path_sin")])  # fmt: skip
    producer = {o: n for n in graph.node for o in n.output}
    count = 0
    for node in graph.node:
        if node.op_type != "GroupQueryAttention":
            continue
        q, k = producer.get(node.input[0]), producer.get(node.input[1])
        if not (q and k and q.op_type == k.op_type == "RotaryEmbedding"):
            continue
        split = producer.get(q.input[0])
        if split is None or split.op_type != "Split" or list(split.output) != [q.input[0], k.input[0], node.input[2]]:
            continue
        interleaved = next((helper.get_attribute_value(a) for a in q.attribute if a.name == "interleaved"), 0)
        inputs = [split.input[0], "", "", *node.input[3:7], "fast_path_cos", "fast_path_sin"]
        del node.input[:]
        node.input.extend(inputs)
        node.attribute.extend([helper.make_attribute("do_rotary", 1),
                               helper.make_attribute("rotary_interleaved", interleaved)])  # fmt: skip
        count += 1
    _drop_dead(graph)
    return count


def _drop_dead(graph: onnx.GraphProto) -> None:
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def transformed(export: Path, fold: bool) -> Path:
    out = export.parent / f"{export.name}-{'folded' if fold else 'unguarded'}.onnx"
    if not out.is_file():
        model = onnx.load(export / "model.onnx")
        config = json.loads((export / "fastattn.json").read_text())["config"]
        assert drop_guards(model.graph) == len(config["decoder_layers"])
        if fold:
            assert fold_rotary(model.graph, config) == len(config["decoder_layers"])
        onnx.save(model, out)
    return out


# -- running ----------------------------------------------------------------------------------------


class Decoder:
    """One graph's session, decoding greedily with the cache bound as the next past or one shared buffer."""

    def __init__(self, path: Path, pairs: dict[str, str], disabled_optimizers: list[str] | None = None,
                 head_size: int | None = None):  # fmt: skip
        """``pairs``: present output -> past input; ``head_size`` where the cache's last dim is symbolic."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=disabled_optimizers)  # fmt: skip
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.pairs = pairs
        shape = next(i.shape for i in self.session.get_inputs() if i.name in self.pairs.values())
        self.heads, self.head_size = shape[1], head_size or shape[3]

    @classmethod
    def of_export(cls, path: Path, manifest: dict) -> Decoder:
        """A graph file with a fastattn manifest's cache pairs and session settings."""
        pairs = {c["present"]: c["past"] for c in manifest["graphs"][0]["cache"]}
        return cls(path, pairs, manifest.get("session", {}).get("disabled_optimizers") or None)

    def generate(self, prompt: list[int], new: int, shared: bool) -> tuple[list[int], float]:
        """Greedy tokens and the median decode step in ms."""
        binding = self.session.io_binding()
        heads, head = self.heads, self.head_size
        if shared:
            binding.bind_output("logits", "cpu")
            for present, past in self.pairs.items():
                buffer = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, heads, len(prompt) + new, head), np.float32))
                binding.bind_ortvalue_input(past, buffer)
                binding.bind_ortvalue_output(present, buffer)
        else:
            for past in self.pairs.values():
                binding.bind_cpu_input(past, np.zeros((1, heads, 0, head), np.float32))
        ids, mask = np.array([prompt], np.int64), np.ones((1, len(prompt)), np.int64)
        tokens, steps = [], []
        for _ in range(new):
            start = time.perf_counter()
            binding.bind_cpu_input("input_ids", ids)
            binding.bind_cpu_input("attention_mask", mask)
            if shared:
                binding.bind_output("logits", "cpu")  # its shape changes after the prompt
            else:
                binding.clear_binding_outputs()
                for name in self.outputs:
                    binding.bind_output(name, "cpu")
            self.session.run_with_iobinding(binding)
            values = binding.get_outputs()
            names = ["logits", *self.pairs] if shared else self.outputs
            for name, value in zip(names, values, strict=True):
                if name == "logits":
                    token = int(value.numpy()[0, -1].argmax())
                elif not shared:
                    binding.bind_ortvalue_input(self.pairs[name], value)
            steps.append(time.perf_counter() - start)
            tokens.append(token)
            ids, mask = np.array([[token]], np.int64), np.ones((1, mask.shape[1] + 1), np.int64)
        return tokens, float(np.median(steps[1:])) * 1e3


def logits_error(a: Path, b: Path, manifest: dict, prompt: list[int]) -> float:
    """Largest logits difference between two graphs at the prompt and one decode step."""
    worst, outs = 0.0, []
    for path in (a, b):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        pasts = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
                 for i in session.get_inputs() if i.name.startswith("past")}  # fmt: skip
        first = dict(zip(names, session.run(None, {"input_ids": np.array([prompt], np.int64),
                                                   "attention_mask": np.ones((1, len(prompt)), np.int64), **pasts})))  # fmt: skip
        pair = {c["past"]: c["present"] for c in manifest["graphs"][0]["cache"]}
        second = dict(zip(names, session.run(None, {"input_ids": np.array([[7]], np.int64),
                                                    "attention_mask": np.ones((1, len(prompt) + 1), np.int64),
                                                    **{p: first[q] for p, q in pair.items()}})))  # fmt: skip
        outs.append((first["logits"], second["logits"]))
    for x, y in zip(*outs, strict=True):
        worst = max(worst, float(np.abs(x - y).max()))
    return worst


def run(source: Path, work: Path, prompt_tokens: int, new: int, rounds: int) -> dict:
    from benchmarks.genai_worker import prompts

    exports = export_gqa(source, work)
    config = json.loads((source / "fp32" / "fastattn.json").read_text())["config"]
    prompt = prompts(1, prompt_tokens, config["vocab_size"])[0]
    rows, checks = [], {}
    for precision, gqa in exports.items():
        manifest = json.loads((gqa / "fastattn.json").read_text())
        today = source / precision
        graphs = {
            "today (mha path), plain": (today / "model.onnx", json.loads((today / "fastattn.json").read_text()), False),
            "GQA, guard dropped, plain": (transformed(gqa, False), manifest, False),
            "GQA, guard dropped, shared buffer": (transformed(gqa, False), manifest, True),
            "GQA + rotary folded, plain": (transformed(gqa, True), manifest, False),
            "GQA + rotary folded, shared buffer": (transformed(gqa, True), manifest, True),
        }
        decoders = {name: Decoder.of_export(path, m) for name, (path, m, _) in graphs.items()}
        times: dict[str, list[float]] = {name: [] for name in graphs}
        tokens = {}
        for name, decoder in decoders.items():
            tokens[name] = decoder.generate(prompt, 8, graphs[name][2])[0]  # warm-up
        for round_ in range(rounds):
            order = list(graphs) if round_ % 2 == 0 else list(reversed(graphs))
            for name in order:
                tokens[name], ms = decoders[name].generate(prompt, new, graphs[name][2])
                times[name].append(ms)
        for name in graphs:
            rows.append({"precision": precision, "path": name, "decode_ms": float(np.median(times[name])),
                         "rounds_ms": times[name]})  # fmt: skip
        folded = transformed(gqa, True)
        checks[precision] = {
            "shared_tokens_equal_plain": tokens["GQA + rotary folded, shared buffer"] == tokens["GQA + rotary folded, plain"],
            "folded_vs_export_max_logits_error": logits_error(gqa / "model.onnx", folded, manifest, prompt),
        }
    return {"machine": describe(THREADS), "shape": f"{len(config['decoder_layers'])}x{config['d_model']}",
            "prompt": prompt_tokens, "new": new, "rounds": rounds, "rows": rows, "checks": checks}  # fmt: skip


def markdown(result: dict) -> str:
    lines = [
        "# GenAI's decode path rebuilt from a fastattn export, step by step (what --kv-buffer builds)",
        "",
        f"{result.get('shape', '6x512')} Llama shape of genai.md, batch 1, {THREADS} threads, prompt {result['prompt']} + {result['new']} greedy "
        f"tokens, one Python IOBinding loop for every row; median decode step per round, {result['rounds']} "
        "alternating rounds in one process. See the module doc of benchmarks/gqa_fast_path.py for each path.",
        "",
        "| precision | path | decode ms/token | rounds |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['precision']} | {r['path']} | {r['decode_ms']:.3f} | "
                     f"{', '.join(f'{x:.3f}' for x in r['rounds_ms'])} |")  # fmt: skip
    lines += [""]
    for precision, c in result["checks"].items():
        lines.append(f"- {precision}: shared-buffer tokens equal plain: {c['shared_tokens_equal_plain']}; folded graph "
                     f"vs export, largest logits difference (prefill + one step): {c['folded_vs_export_max_logits_error']:.2e}")  # fmt: skip
    m = result["machine"]
    lines += ["", f"Machine: {m.get('cpu', '?')}, {THREADS} threads; onnxruntime {m['versions'].get('onnxruntime', ort.__version__)}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument("--workdir", type=Path, default=None, help="the models of benchmarks/genai.py [build/genai]")
    args = parser.parse_args(argv)
    out = out_dir(args)
    shape, new, rounds = (SMOKE_SHAPE, SMOKE_NEW, SMOKE_ROUNDS) if args.smoke else (Shape(), NEW, ROUNDS)
    cache = args.workdir or work_dir(args, out, "genai")
    # the checkpoint and exports benchmarks.genai builds (a no-op when it ran first)
    source = fastattn_models(cache, shape, parts=("fp32", "int4"))
    work = work_dir(args, out, "gqa-fast-path")
    result = run(source, work, shape.prompt, new, rounds)
    result["command"] = command("gqa_fast_path", *(["--smoke"] if args.smoke else []))
    write(out, "gqa_fast_path", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
