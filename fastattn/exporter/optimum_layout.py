"""Optimum's layout of an encoder-decoder export, so ``ORTModelForSeq2SeqLM`` opens the export directory.

Optimum (optimum-onnx 0.1, ``optimum/onnxruntime/modeling_seq2seq.py``) runs an encoder-decoder as

    encoder_model.onnx          input_ids, attention_mask -> last_hidden_state
    decoder_model_merged.onnx   input_ids, attention_mask (decoder tokens so far, ones when the caller
                                gives none), encoder_hidden_states, encoder_attention_mask, use_cache_branch,
                                past_key_values.{i}.decoder.key/value, past_key_values.{i}.encoder.key/value
                                -> logits, present.{i}.decoder.key/value, present.{i}.encoder.key/value

with caches (batch, heads, length, head_size): the first call passes empty pasts and
``use_cache_branch = False`` and takes the cross keys/values from ``present.{i}.encoder.*``; later
calls pass them back as ``past_key_values.{i}.encoder.*`` with ``use_cache_branch = True``.

fastattn's own layout projects the cross keys/values once in ``encoder.onnx`` (packed,
(batch, encoder_sequence, heads·head_size)) and feeds them to ``decoder.onnx``; its runtime, the
examples and validation are built on that, so the Optimum files are an adapter beside them
(``--package optimum``), made from the validated graphs with onnx_ir, no new capture:

- ``encoder_model.onnx``: ``encoder.onnx`` without the cross outputs (their projections removed as
  unused), ``encoder_hidden_states`` renamed ``last_hidden_state``;
- ``decoder_model_merged.onnx``: ``decoder.onnx`` whose cross inputs come from one ``If`` on
  ``use_cache_branch``: *else* runs the encoder graph's own projection nodes (copied, weights
  prefixed ``optimum_cross.``) on ``encoder_hidden_states`` and returns them in Optimum's head layout
  as the encoder presents too; *then* repacks the encoder pasts and passes them through. Self caches
  are renamed; nothing else changes, so the decoder's weights are not duplicated within the file.

Cost: the adapter duplicates the weights on disk (encoder_model holds the encoder's, the merged
decoder the decoder's and the cross projections), nothing at run time: decode steps take the
*then* branch (two Transposes per layer). It is checked against the export's own graphs on
the same teacher-forced tokens (padded sources, a prefill and decode steps) at the fp32 tolerance.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as ir_passes
import onnxruntime as ort

from fastattn.errors import ExportError, InputError
from fastattn.exporter.validate import TOLERANCES, compare
from fastattn.onnx_files import save_model
from fastattn.runtime.manifest import Arch, Manifest, Precision
from fastattn.runtime.records import CaseRecord, OptimumPackage, ValidationRecord
from fastattn.runtime.samples import sample_inputs
from fastattn.runtime.session import ExportedModel

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model_merged.onnx"
PREFIX = "optimum_cross."


def _value(name: str, dtype: ir.DataType, dims: Iterable[int | str]) -> ir.Value:
    return ir.Value(name=name, type=ir.TensorType(dtype), shape=ir.Shape(list(dims)))


def _cross_names(manifest: Manifest) -> list[str]:
    return [s.name for s in manifest.graph("encoder").outputs[1:]]


def encoder_model(path: Path, cross: list[str]) -> ir.Model:
    """``encoder.onnx`` returning only ``last_hidden_state``."""
    model = ir.load(path)
    graph = model.graph
    hidden = graph.outputs[0]
    for value in [v for v in graph.outputs if v.name in cross]:
        graph.outputs.remove(value)
    hidden.name = "last_hidden_state"
    ir_passes.RemoveUnusedNodesPass()(model)
    return model


def _projection(path: Path, cross: list[str]) -> tuple[list[ir.Node], list[ir.Value], ir.Value, list[ir.Value]]:
    """The nodes of ``encoder.onnx`` between ``encoder_hidden_states`` and the cross outputs (a fresh load,
    so they can move to another graph), their initializers, the hidden-state value and the cross values."""
    graph = ir.load(path).graph
    hidden = graph.outputs[0]
    outputs = [v for v in graph.outputs if v.name in cross]
    chosen: dict[int, ir.Node] = {}
    weights: dict[str, ir.Value] = {}
    stack = list(outputs)
    while stack:
        value = stack.pop()
        if value is hidden:
            continue
        node = value.producer()
        if node is None:
            if value.name in graph.initializers:
                weights[value.name] = value
                continue
            raise ExportError(f"the cross keys/values of {path.name} depend on input {value.name!r}, not only on "
                              "the encoder's hidden states", "export without --package optimum")  # fmt: skip
        if id(node) not in chosen:
            chosen[id(node)] = node
            stack += [v for v in node.inputs if v is not None]
    nodes = [n for n in graph if id(n) in chosen]  # graph order is topological
    graph.remove(nodes, safe=False)
    graph.outputs.clear()
    for name in weights:
        graph.initializers.pop(name)
    return nodes, list(weights.values()), hidden, outputs


def decoder_model_merged(encoder_path: Path, decoder_path: Path, manifest: Manifest) -> ir.Model:
    """``decoder.onnx`` taking Optimum's inputs (see the module doc)."""
    cross = _cross_names(manifest)
    entry = manifest.graph("decoder")
    model = ir.load(decoder_path)
    graph = model.graph
    inputs = {v.name: v for v in graph.inputs}
    past = next(s for s in entry.inputs if s.name.startswith("past_"))
    heads, head_size = int(past.shape[1]), int(past.shape[3])
    d_model = int(manifest.graph("encoder").outputs[0].shape[2])
    layers = len(cross) // 2
    f32 = ir.DataType.FLOAT

    nodes, weights, hidden, packed = _projection(encoder_path, cross)
    hidden_in = _value("encoder_hidden_states", f32, ("batch", "encoder_sequence", d_model))
    for use in list(hidden.uses()):
        use.node.replace_input_with(use.idx, hidden_in)
    for w in weights:
        w.name = PREFIX + w.name
        graph.register_initializer(w)
    for i, node in enumerate(nodes):
        node.name = f"{PREFIX}{node.name or i}"
        for out in node.outputs:
            out.name = PREFIX + (out.name or f"{i}")
    use_cache = _value("use_cache_branch", ir.DataType.BOOL, (1,))
    enc_past = {(i, kind): _value(f"past_key_values.{i}.encoder.{kind}", f32, ("batch", heads, "encoder_sequence_out",
                                                                             head_size))
                for i in range(layers) for kind in ("key", "value")}  # fmt: skip

    def const(name: str, values: list[int]) -> ir.Value:
        v = ir.Value(name=name, const_value=ir.tensor(np.array(values, np.int64), name=name))
        graph.register_initializer(v)
        return v

    packed_shape = const(PREFIX + "packed_shape", [0, 0, heads * head_size])
    split_shape = const(PREFIX + "head_shape", [0, 0, heads, head_size])
    # else: project the encoder's hidden states (the encoder graph's own nodes), give Optimum its layout
    else_nodes, else_out = list(nodes), []
    for k, value in enumerate(packed):
        split = ir.node("Reshape", [value, split_shape], name=f"{PREFIX}split_{k}")
        heads_first = ir.node("Transpose", [split.outputs[0]], {"perm": [0, 2, 1, 3]}, name=f"{PREFIX}heads_{k}")
        split.outputs[0].name, heads_first.outputs[0].name = f"{PREFIX}split_{k}", f"{PREFIX}heads_{k}"
        else_nodes += [split, heads_first]
        else_out.append(heads_first.outputs[0])
    # then: the pasts repacked for fastattn's cross inputs, and passed through as the presents
    then_nodes, then_packed, then_present = [], [], []
    for k, (i, kind) in enumerate((i, kind) for i in range(layers) for kind in ("key", "value")):
        source = enc_past[(i, kind)]
        seq_first = ir.node("Transpose", [source], {"perm": [0, 2, 1, 3]}, name=f"{PREFIX}seq_{k}")
        pack = ir.node("Reshape", [seq_first.outputs[0], packed_shape], name=f"{PREFIX}pack_{k}")
        keep = ir.node("Identity", [source], name=f"{PREFIX}keep_{k}")
        seq_first.outputs[0].name, pack.outputs[0].name = f"{PREFIX}seq_{k}", f"{PREFIX}pack_{k}"
        keep.outputs[0].name = f"{PREFIX}keep_{k}"
        then_nodes += [seq_first, pack, keep]
        then_packed.append(pack.outputs[0])
        then_present.append(keep.outputs[0])
    then_graph = ir.Graph([], [*then_packed, *then_present], nodes=then_nodes, name="cached_cross")
    else_graph = ir.Graph([], [*packed, *else_out], nodes=else_nodes, name="project_cross")
    branch_if = ir.node("If", [use_cache], {"then_branch": then_graph, "else_branch": else_graph},
                        num_outputs=4 * layers, name=f"{PREFIX}if")  # fmt: skip
    for k, name in enumerate(cross):
        graph.inputs.remove(inputs[name])
        inputs[name].name = f"{PREFIX}unused_{k}"
        inputs[name].replace_all_uses_with(branch_if.outputs[k])
        branch_if.outputs[k].name = name
    graph.insert_before(graph.node(0), branch_if)
    presents = []
    for k, (i, kind) in enumerate((i, kind) for i in range(layers) for kind in ("key", "value")):
        out = branch_if.outputs[2 * layers + k]
        out.name = f"present.{i}.encoder.{kind}"
        out.type, out.shape = ir.TensorType(f32), ir.Shape(["batch", heads, "encoder_sequence_out", head_size])
        presents.append(out)

    # names and order: self caches by layer, then each layer's encoder pair (Optimum reads them in graph order)
    ordered_in = [inputs["input_ids"], inputs["attention_mask"], hidden_in, inputs["encoder_attention_mask"], use_cache]
    for i in range(layers):
        for kind in ("key", "value"):
            value = inputs[f"past_{kind}_{i}"]
            value.name = f"past_key_values.{i}.decoder.{kind}"
            ordered_in.append(value)
        ordered_in += [enc_past[(i, "key")], enc_past[(i, "value")]]
    outputs = {v.name: v for v in graph.outputs}
    ordered_out = [outputs["logits"]]
    for i in range(layers):
        for kind in ("key", "value"):
            value = outputs[f"present_{kind}_{i}"]
            value.name = f"present.{i}.decoder.{kind}"
            ordered_out.append(value)
        ordered_out += presents[2 * i : 2 * i + 2]
    graph.inputs.clear()
    graph.inputs.extend(ordered_in)
    graph.outputs.clear()
    graph.outputs.extend(ordered_out)
    return model


LOADERS = {Arch.DECODER: "ORTModelForCausalLM", Arch.ENCODER: "ORTModelForFeatureExtraction"}


def needless(manifest: Manifest) -> str | None:
    """Why an export gets no Optimum layout (None: it does): what Optimum opens it with, or what it lacks."""
    if manifest.hf is None:
        return "not a Hugging Face model: Optimum needs the checkpoint's config.json"
    if manifest.arch is not Arch.ENCODER_DECODER:
        return f"Optimum opens this {manifest.arch.value} as it is (optimum.onnxruntime.{LOADERS.get(manifest.arch, 'ORTModel')})"
    return None


def build(directory: Path, staged: Path, manifest: Manifest, threads: int | None = None) -> OptimumPackage:
    """Write Optimum's files for the encoder-decoder in ``directory`` into ``staged`` and check them."""
    why = needless(manifest)
    if why:
        raise InputError(f"no Optimum layout for {directory.name}: {why}",
                         "pass --optimum for Hugging Face encoder-decoders only")  # fmt: skip
    enc, dec = (manifest.path_of(directory, manifest.graph(n).file) for n in ("encoder", "decoder"))
    files = save_model(encoder_model(enc, _cross_names(manifest)), staged, ENCODER_FILE)
    files += save_model(decoder_model_merged(enc, dec, manifest), staged, DECODER_FILE)
    check = check_layout(directory, staged, manifest, threads)
    package = OptimumPackage(files=files, validation=check)
    if not check.passed:
        worst = max((o for c in check.cases for o in c.outputs), key=lambda o: o.max_rel)
        raise ExportError(f"Optimum's layout of {directory.name} differs from its own graphs ({worst.name}: "
                          f"max rel {worst.max_rel:.3g}, cosine {worst.cosine:.6f})",
                          "report this with the export's report.md")  # fmt: skip
    return package


def _session(path: Path, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_layout(directory: Path, staged: Path, manifest: Manifest, threads: int | None = None,
                 steps: int = 3) -> ValidationRecord:  # fmt: skip
    """Optimum's files against the export's own graphs on the same teacher-forced tokens: a padded batch of
    sources, a prefill of 4 decoder tokens and ``steps`` single-token steps, logits and caches compared."""
    tol = TOLERANCES[Precision.FP32] if manifest.precision is Precision.FP32 else TOLERANCES[manifest.precision]
    own = ExportedModel.from_manifest(directory, manifest, "cpu", threads)
    encoder, decoder = _session(staged / ENCODER_FILE, threads), _session(staged / DECODER_FILE, threads)
    enc_entry, dec_entry = manifest.graph("encoder"), manifest.graph("decoder")
    rng = np.random.default_rng(0)
    sizes = {"batch": 3, "encoder_sequence": 11}
    src = sample_inputs(enc_entry.inputs, sizes, rng, padded=True)
    vocab = int(dec_entry.outputs[0].shape[-1])
    tokens = rng.integers(0, vocab, (3, 4 + steps), dtype=np.int64)
    ours = own.graph("encoder").run(src)
    hidden = encoder.run(["last_hidden_state"], src)[0]
    stats = [compare("last_hidden_state", hidden, ours[enc_entry.outputs[0].name], tol)]
    layers = len(_cross_names(manifest)) // 2
    cross = {s.name: ours[s.name] for s in enc_entry.outputs[1:]}
    heads, head_size = (int(d) for d in next(s for s in dec_entry.inputs if s.name.startswith("past_")).shape[1::2])
    empty = np.zeros((3, heads, 0, head_size), np.float32)
    own_past = {p.past: empty for p in dec_entry.cache}
    opt_past = {f"past_key_values.{i}.{part}.{kind}": empty for i in range(layers) for part in ("decoder", "encoder")
                for kind in ("key", "value")}  # fmt: skip
    done = 0
    for width in (4, *([1] * steps)):
        ids = tokens[:, done : done + width]
        mask = np.ones((3, done + width), np.int64)
        base = {"input_ids": ids, "attention_mask": mask, "encoder_attention_mask": src["attention_mask"]}
        want = own.graph("decoder").run({**base, **cross, **own_past})
        names = [o.name for o in decoder.get_outputs()]
        got = dict(zip(names, decoder.run(None, {**base, "encoder_hidden_states": hidden, **opt_past,
                                                  "use_cache_branch": np.array([done > 0])}), strict=True))  # fmt: skip
        stats.append(compare("logits", got["logits"], want["logits"], tol))
        for i in range(layers):
            for kind in ("key", "value"):
                stats.append(compare(f"present.{i}.decoder.{kind}", got[f"present.{i}.decoder.{kind}"],
                                     want[f"present_{kind}_{i}"], tol))  # fmt: skip
        own_past = {p.past: want[p.present] for p in dec_entry.cache}
        opt_past = {n.replace("present.", "past_key_values.", 1): v for n, v in got.items() if n != "logits"}
        done += width
    worst: dict[str, object] = {}
    for s in stats:
        if s.name not in worst or (worst[s.name].passed and not s.passed) or s.max_rel > worst[s.name].max_rel:
            worst[s.name] = s
    outputs = list(worst.values())
    passed = all(o.passed for o in outputs)
    case = CaseRecord("decoder_model_merged", f"batch=3 enc_seq=11 padded, 4 tokens +{steps} steps",
                      {"batch": 3, "encoder_sequence": 11, "sequence": 4}, True, steps, passed, outputs)  # fmt: skip
    return ValidationRecord(passed, manifest.precision.value, tol, [case], "the export's own graphs")


def report_lines(manifest: Manifest) -> list[str]:
    """The report's section on opening the export with Optimum (Hugging Face models only)."""
    if manifest.hf is None:
        return []
    lines = ["", "## Optimum", ""]
    if manifest.arch is Arch.DECODER:
        lines.append("`optimum.onnxruntime.ORTModelForCausalLM.from_pretrained(OUT)` opens this export as it is "
                     "(caches `past_key_values.N.key/value` -> `present.N.key/value`). It has no `position_ids` "
                     "input (positions come from the attention mask), for which Optimum logs a legacy-model warning.")  # fmt: skip
        if any(d.startswith("min(") for p in manifest.graphs[0].inputs for d in p.shape if isinstance(d, str)):
            lines.append("Windowed layers return trimmed caches: run it with `use_io_binding=False` (Optimum's "
                         "default on CPU); with IO binding Optimum preallocates full-length presents.")  # fmt: skip
    elif manifest.arch is Arch.ENCODER:
        lines.append("`optimum.onnxruntime.ORTModelForFeatureExtraction.from_pretrained(OUT)` opens this export as it "
                     "is; `token_type_ids` is not an input (type 0 is folded into the position table).")  # fmt: skip
    elif manifest.optimum is None:
        lines.append("`fastattn package OUT --optimum` (or `--package optimum` at export) writes Optimum's "
                     "encoder-decoder layout, so `ORTModelForSeq2SeqLM.from_pretrained(OUT)` opens it.")  # fmt: skip
    else:
        check = manifest.optimum.validation
        worst = max((o for c in check.cases for o in c.outputs), key=lambda o: o.max_abs) if check else None
        lines.append(f"`{manifest.optimum.loader}.from_pretrained(OUT)` opens this export: "
                     f"{', '.join(f'`{f}`' for f in manifest.optimum.files)} hold Optimum's layout (cross keys/values "
                     "in an `If` on `use_cache_branch`), built from the validated graphs.")  # fmt: skip
        if worst is not None:
            lines.append(f"Checked against the export's own graphs ({check.cases[0].case}): worst max abs "
                         f"{worst.max_abs:.2g} ({worst.name}), {'passed' if check.passed else 'FAILED'}.")  # fmt: skip
    return lines
