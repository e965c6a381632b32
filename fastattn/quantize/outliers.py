"""Outlier channels kept in float around int8 MatMuls (the ``int8`` mode's second tier).

Dynamic int8 quantizes a MatMul's activation per tensor: one scale for the whole input. When a
few input channels are far larger than the rest (BERT-style encoders: LayerNorm outputs whose
channels 99 and 157 reach 28 where the median channel reaches 1.7; GELU outputs up to 24 where
the median is 1.1), that scale is set by them and every other channel loses most of its 8 bits.
This pass takes up to ``count`` channels of each weight site's input that stand out (at least
:data:`MIN_RATIO` times the median channel's peak) out of the integer
product and computes them in float beside it::

    x ─► Mul(x, keep) ─► MatMul(·, W with the outlier rows zeroed)  [the site: quantized]  ─► Add ─► y
    x ─► Gather(x, outliers, axis=-1) ─► MatMul(·, W[outliers])      [float, k rows]        ─┘

The sum is exactly ``x @ W`` in float; after quantization only the integer product is
approximate, with a scale set by the ordinary channels. The channels are found from the
largest absolute value per channel of each site's input over calibration batches (the
model's own random sample inputs by default: for an encoder they find the same LayerNorm
outlier channels as real text, see :func:`channel_absmax`). The Add goes after the site's bias
Add when there is one, so ONNX Runtime still folds the bias into its integer MatMul kernel.

Measured on all-MiniLM-L6-v2 (6 layers, d=384, 2 threads, ONNX Runtime 1.32; pooled-embedding cosine
against the float model on 32 held-out paragraphs): all 24 weight MatMuls int8 gave mean 0.99390 /
least 0.99062; with 4 float channels per weight 0.99859 / 0.99775 (channels found on random token ids
did as well as on real text). Gated at mean 0.999, plain int8 kept 11 of 24 weights in float, with this
tier 4 (13 weights rewritten): 1.41x less CPU time per call (10.8 vs 15.2 ms, one interleaved run; the
rewrite's Mul, Gather, small MatMul and Add cost about 0.75% each).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

SUFFIX = "_outliers"  # the float MatMul beside a site is named <site><SUFFIX>
# A channel is an outlier when its largest absolute value is at least this many times the median channel's.
# MiniLM: attention-output inputs peak at 2-3x (splitting them changed nothing: cosine 0.99859 vs 0.99854),
# LayerNorm outputs at 4-6x (QKV) and 9-18x (FFN up), GELU outputs at 6-30x.
MIN_RATIO = 4.0


@dataclass(frozen=True)
class OutlierSplit:
    """One rewritten site: which input channels it computes in float."""

    node: str
    channels: tuple[int, ...]
    share: float  # largest outlier's absolute value over the median channel's: how far out they were


def channel_absmax(model: ir.Model, inputs: Iterable[str], batches: Iterable[Mapping[str, np.ndarray]],
                   threads: int | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """The largest absolute value of each channel (last axis) of the named values of ``model``'s main graph
    over ``batches`` (feeds of the graph). The model is run by ONNX Runtime with those values as outputs."""
    names = list(dict.fromkeys(inputs))
    graph_inputs = {v.name for v in model.graph.inputs}
    values = {v.name: v for node in model.graph for v in node.outputs}
    added = [values[n] for n in names if n not in graph_inputs and not values[n].is_graph_output()]
    model.graph.outputs.extend(added)
    try:
        with tempfile.TemporaryDirectory(prefix="fastattn-outliers-") as tmp:
            path = Path(tmp) / "probe.onnx"
            ir.save(model, path, external_data="probe.onnx.data", size_threshold_bytes=1024)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if threads:
                options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            wanted = {i.name for i in session.get_inputs()}
            computed = [n for n in names if n not in graph_inputs]
            found: dict[str, np.ndarray] = {}
            for batch in batches:
                feeds = {k: v for k, v in batch.items() if k in wanted}
                outs = dict(zip(computed, session.run(computed, feeds), strict=True)) if computed else {}
                for name in names:
                    out = np.asarray(feeds[name] if name in graph_inputs else outs[name])
                    peak = np.abs(out.reshape(-1, out.shape[-1])).max(0)
                    found[name] = peak if name not in found else np.maximum(found[name], peak)
    finally:
        for value in added:
            model.graph.outputs.remove(value)
    return found


def split_outliers(model: ir.Model, sites: Iterable[str], absmax: Mapping[str, np.ndarray],
                   count: int) -> list[OutlierSplit]:  # fmt: skip
    """Rewrite each MatMul named in ``sites`` (main graph, constant rank-2 B) so that, of the ``count`` input
    channels with the largest ``absmax[input name]``, those at least :data:`MIN_RATIO` times the median
    channel's are computed by a float MatMul beside it (a site without such channels is left alone). Sites
    that share an input share its Mul and Gather. Returns what was rewritten, in graph order."""
    wanted = set(sites)
    shared: dict[tuple[str, tuple[int, ...]], tuple[ir.Value, ir.Value]] = {}
    done = []
    for node in list(model.graph):
        if node.name not in wanted or node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        x, weight = node.inputs[0], node.inputs[1]
        peak = absmax.get(x.name) if x is not None else None
        if peak is None or weight is None or weight.const_value is None or count <= 0 or count >= len(peak):
            continue
        median = float(np.median(peak)) or 1.0
        top = np.argsort(peak)[-count:]
        channels = tuple(sorted(int(c) for c in top if peak[c] >= MIN_RATIO * median))
        if not channels:  # no channel stands out: the int8 scale is already set by ordinary ones
            continue
        w = weight.const_value.numpy()
        key = (x.name, channels)
        if key not in shared:
            shared[key] = _masked_and_gathered(model, node, x, channels, w.dtype)
        masked, gathered = shared[key]
        main = w.copy()
        main[list(channels)] = 0
        weight.const_value = ir.tensor(main, name=weight.name)
        node.replace_input_with(0, masked)
        side_w = _initializer(model, f"{node.name}{SUFFIX}_weight", np.ascontiguousarray(w[list(channels)]))
        side = ir.node("MatMul", [gathered, side_w], name=f"{node.name}{SUFFIX}")
        side.outputs[0].name = f"{node.name}{SUFFIX}_out"
        after = _bias_add(node) or node
        out = after.outputs[0]
        total = ir.node("Add", [out, side.outputs[0]], name=f"{node.name}{SUFFIX}_Add")
        total.outputs[0].name = f"{out.name}{SUFFIX}_sum"
        if out.is_graph_output():
            _swap_graph_output(model, out, total.outputs[0])
        ir.convenience.replace_all_uses_with(out, total.outputs[0])
        total.replace_input_with(0, out)  # the Add itself keeps reading the site's output
        model.graph.insert_after(after, [side, total])
        done.append(OutlierSplit(node.name or "", channels, round(float(peak[list(channels)].max()) / median, 1)))
    return done


def _masked_and_gathered(model: ir.Model, node: ir.Node, x: ir.Value, channels: tuple[int, ...],
                         dtype: np.dtype) -> tuple[ir.Value, ir.Value]:  # fmt: skip
    keep = np.ones(int(node.inputs[1].const_value.shape[0]), dtype)  # one entry per row of the weight
    keep[list(channels)] = 0
    tag = f"{node.name}{SUFFIX}"
    keep_v = _initializer(model, f"{tag}_keep", keep)
    index_v = _initializer(model, f"{tag}_channels", np.asarray(channels, np.int64))
    mul = ir.node("Mul", [x, keep_v], name=f"{tag}_Mul")
    mul.outputs[0].name = f"{tag}_masked"
    gather = ir.node("Gather", [x, index_v], attributes={"axis": -1}, name=f"{tag}_Gather")
    gather.outputs[0].name = f"{tag}_x"
    for new in (mul, gather):
        new.outputs[0].type = x.type
    model.graph.insert_before(node, [mul, gather])
    return mul.outputs[0], gather.outputs[0]


def _initializer(model: ir.Model, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    model.graph.register_initializer(value)
    return value


def _bias_add(node: ir.Node) -> ir.Node | None:
    """The Add of a constant bias that is the MatMul's only consumer (ORT folds it into the int8 kernel)."""
    uses = list(node.outputs[0].uses())
    if len(uses) != 1 or node.outputs[0].is_graph_output():
        return None
    add = uses[0].node
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.inputs) != 2:
        return None
    other = add.inputs[1 - uses[0].idx]
    return add if other is not None and other.const_value is not None else None


def _swap_graph_output(model: ir.Model, old: ir.Value, new: ir.Value) -> None:
    outputs = model.graph.outputs
    index = outputs.index(old)
    name = old.name
    old.name = f"{name}{SUFFIX}_partial"
    new.name = name
    outputs[index] = new
