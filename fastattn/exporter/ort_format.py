"""ORT-format packages: ``<graph>.ort`` beside each ``.onnx`` of an export, and the operator lists a
minimal ONNX Runtime build takes (``--include_ops_by_config``).

Conversion is ONNX Runtime's own: an ``InferenceSession`` with ``session.save_model_format=ORT``
writes the optimized graph (what ``onnxruntime.tools.convert_onnx_models_to_ort`` does), and
``onnxruntime.tools.ort_format_model.create_config_from_models`` writes the operator configs.

- Optimization level ``all`` without ``NchwcTransformer``, as ORT's converter does for models
  that must run on any CPU: measured on the demo decoder (ORT 1.32), ``basic`` keeps the lowered
  kernels (ONNX ``Attention``, ``RotaryEmbedding``, ``SkipSimplifiedLayerNormalization``) but not
  ORT's int8 fusions (239 nodes vs 147; ``MatMulInteger`` + ``DynamicQuantizeLinear`` stay
  apart), ``extended`` and ``all`` give the same graph. A full build replays nothing at load
  time: the optimizations are baked in, as a minimal build needs them.
- The export's ``session.disabled_optimizers`` apply to the conversion too (an optimizer the
  runtime turns off must not be baked into the ``.ort``).
- Model-local functions (the portable ``fastattn`` op) are inlined by ONNX Runtime before saving:
  the ``.ort`` holds their standard-op bodies, and the config names no ``fastattn`` op.
- What a minimal build cannot hold, refused in one line: a node of a domain that is neither an
  ONNX Runtime kernel domain nor a model-local function (no kernel could ever be compiled in),
  and weights over 2 GiB (an ORT-format model is one flatbuffer, which cannot exceed 2 GiB).

Each ``.ort`` is validated against its ``.onnx`` in ONNX Runtime Python on the cases export
validation uses (``exporter.validate.default_cases``, decode steps through the cache), at the
fp32 tolerance: the two run the same kernels. Files are written to a staging directory and moved
in with the rest of the export (its staging directory), the manifest last.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import onnx
import onnxruntime as ort

from fastattn.errors import ExportError, ValidationFailed
from fastattn.exporter.validate import ValidationResult, default_cases, validate
from fastattn.families.graphs import GraphDef
from fastattn.runtime.manifest import Manifest, Precision
from fastattn.runtime.records import OrtGraph, OrtPackage
from fastattn.runtime.session import GraphSession, SessionConfig

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

LEVEL = "all"
LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# Hardware-specific layout (AVX-512 blocked tensors): an .ort made with it runs only on such CPUs.
PLATFORM_OPTIMIZERS = ("NchwcTransformer",)
OPS_CONFIG = "required_operators.config"
TYPED_CONFIG = "required_operators_and_types.config"
KERNEL_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc")
FLATBUFFER_LIMIT = 2**31 - 1  # bytes: one ORT-format model is one flatbuffer


# ---- checks ---------------------------------------------------------------------------------------


def check_convertible(directory: Path, manifest: Manifest) -> None:
    """An ExportError for an export a minimal ONNX Runtime build cannot hold (see the module doc)."""
    for entry in manifest.graphs:
        model = onnx.load(str(manifest.path_of(directory, entry.file)), load_external_data=False)
        functions = {(f.domain, f.name) for f in model.functions}
        for node in _all_nodes(model.graph):
            if node.domain not in KERNEL_DOMAINS and (node.domain, node.op_type) not in functions:
                raise ExportError(
                    f"{entry.file} holds node {node.name or node.op_type!r} of op {node.domain}::{node.op_type}, "
                    "which has neither an ONNX Runtime kernel nor a function body: no minimal build can run it",
                    "export with a target whose lowering replaces it (fastattn-export -t cpu), or keep the .onnx",
                )
        weights = sum(_tensor_bytes(t) for t in model.graph.initializer)
        if weights > FLATBUFFER_LIMIT:
            raise ExportError(
                f"{entry.file} has {weights / 2**30:.2f} GiB of weights; an ORT-format model is one flatbuffer "
                "of at most 2 GiB",
                "quantize the export first (fastattn quantize out/ --quantize int4), or ship the .onnx",
            )


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _all_nodes(sub)


def _tensor_bytes(t: onnx.TensorProto) -> int:
    for entry in t.external_data:
        if entry.key == "length":
            return int(entry.value)
    size = 1
    for d in t.dims:
        size *= d
    return size * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


# ---- conversion -----------------------------------------------------------------------------------


def convert_graph(source: Path, destination: Path, disabled: list[str], level: str = LEVEL) -> int:
    """``source`` (.onnx) -> ``destination`` (.ort), optimized at ``level``; the optimized node count."""
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.optimized_model_filepath = str(destination)
    options.add_session_config_entry("session.save_model_format", "ORT")
    options.add_session_config_entry("session.qdqisint8allowed", "0")  # x86 and Arm alike, as ORT's tool
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"],
                             disabled_optimizers=sorted({*disabled, *PLATFORM_OPTIMIZERS}))  # fmt: skip
    except Exception as e:  # noqa: BLE001 - ORT's own load errors, one line
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f"ONNX Runtime cannot convert {source.name} to ORT format: {reason}",
                          "check that the export loads (fastattn run DIR --random)") from e  # fmt: skip
    return _ort_node_count(destination)


def _ort_node_count(path: Path) -> int:
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py import fbs

    model = fbs.InferenceSession.InferenceSession.GetRootAs(path.read_bytes(), 0).Model()
    return model.Graph().NodesLength()


def write_configs(models: list[Path], directory: Path) -> tuple[list[str], int]:
    """The operator configs of ``models`` in ``directory``; the config's ops and the typed entries."""
    from onnxruntime.tools.ort_format_model import create_config_from_models

    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)  # it logs each file at INFO
    for name, typed in ((OPS_CONFIG, False), (TYPED_CONFIG, True)):
        create_config_from_models(models, directory / name, typed)
        text = (directory / name).read_text()  # its header names the models by their (staging) paths
        (directory / name).write_text("".join(text.replace(f"{m.parent}{os.sep}", "") for m in models[:1]))
    ops = [f"{domain};{opset};{op}" for domain, opset, names in _config_lines(directory / OPS_CONFIG) for op in names]
    typed = sum(1 for _, _, names in _config_lines(directory / TYPED_CONFIG) for op in names if "{" in op)
    return ops, typed


def _config_lines(path: Path) -> list[tuple[str, str, list[str]]]:
    """(domain, opset, ops) per line; a typed op reads ``Op{"inputs": {"0": ["float", ...]}}``."""
    out = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            domain, opset, names = line.split(";", 2)
            out.append((domain, opset, _split_top_level(names)))
    return out


def _split_top_level(text: str) -> list[str]:
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "{[") - (ch in "}]")
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return items + [text[start:]]


# ---- validation -----------------------------------------------------------------------------------


def validate_ort(directory: Path, staged: Path, manifest: Manifest, threads: int | None = None) -> ValidationResult:
    """Each staged .ort against its .onnx on the export's validation cases (fp32 tolerance)."""
    config = SessionConfig(threads, disabled_optimizers=tuple(manifest.session.disabled_optimizers),
                           memory_pattern_off=tuple(manifest.session.memory_pattern_off))  # fmt: skip
    graphs = [GraphDef(e.name, None, e.inputs, e.outputs, e.cache) for e in manifest.graphs]
    longest = max((a.window + a.global_tokens for a in manifest.attention), default=0)
    cases = [c for g in graphs for c in default_cases(g, longest, manifest.max_length)]
    if manifest.kv_buffer:
        cases = [c for c in cases if not c.padded]
    onnx_runs = {e.name: GraphSession(e, directory / e.file, config=config).run for e in manifest.graphs}
    ort_runs = {e.name: GraphSession(e, staged / ort_name(e.file), config=config).run for e in manifest.graphs}
    result = validate(graphs, ort_runs, cases, Precision.FP32, references=onnx_runs)
    result.against = "the .onnx graphs"
    return result


def ort_name(onnx_file: str) -> str:
    return str(Path(onnx_file).with_suffix(".ort"))


# ---- the package ----------------------------------------------------------------------------------


def build(directory: Path, staged: Path, manifest: Manifest, threads: int | None = None,
          progress: Progress | None = None) -> OrtPackage:  # fmt: skip
    """Convert every graph of the export in ``directory`` into ``staged``, write the configs, validate.

    Raises ExportError (cannot be held / converted) or ValidationFailed (the .ort disagrees)."""
    step = progress or (lambda message: log.info(message))
    check_convertible(directory, manifest)
    disabled = list(manifest.session.disabled_optimizers)
    graphs = []
    for entry in manifest.graphs:
        step(f"converting {entry.file} to ORT format")
        target = staged / ort_name(entry.file)
        ort_nodes = convert_graph(directory / entry.file, target, disabled)
        onnx_bytes = sum(p.stat().st_size for p in directory.glob(f"{entry.file}*") if p.is_file())
        nodes = len(onnx.load(str(directory / entry.file), load_external_data=False).graph.node)
        graphs.append(OrtGraph(entry.name, entry.file, target.name, onnx_bytes, target.stat().st_size, nodes, ort_nodes))
    ops, typed = write_configs([staged / g.file for g in graphs], staged)
    step("validating the ORT-format model against the ONNX model")
    result = validate_ort(directory, staged, manifest, threads)
    package = OrtPackage(graphs, LEVEL, disabled, len(ops), typed, OPS_CONFIG, TYPED_CONFIG, ops, result.record(),
                         ort.__version__)  # fmt: skip
    if not result.passed:
        case, out = result.failures()[0]
        raise ValidationFailed(
            f"the ORT-format {case.graph} differs from the ONNX model: output {out.name!r} at {case.name}, "
            f"max abs error {out.max_abs:.3g}",
            "report it with the export; the .onnx is unchanged and still valid",
        )
    return package


def report_lines(package: OrtPackage | None) -> list[str]:
    """The report's section on the ORT-format package."""
    if package is None:
        return []
    lines = ["", "## ORT format (minimal ONNX Runtime builds)", "",
             f"Optimization level `{package.optimization_level}` (without {', '.join(PLATFORM_OPTIMIZERS)}; "
             f"disabled: {', '.join(package.disabled_optimizers) or 'none'}), onnxruntime {package.onnxruntime}. "
             f"A minimal build takes `{package.config}` ({package.operators} operators) or `{package.typed_config}` "
             f"(the same, {package.typed_operators} restricted to the types used: a smaller binary).", "",
             "| graph | .onnx | nodes | .ort | nodes in .ort |", "|---|---|---|---|---|"]  # fmt: skip
    for g in package.graphs:
        lines.append(f"| {g.name} | {g.onnx_file} {g.onnx_bytes / 1e6:.2f} MB | {g.nodes} | "
                     f"{g.file} {g.bytes / 1e6:.2f} MB | {g.ort_nodes} |")  # fmt: skip
    if package.validation:
        cases = package.validation.cases
        worst = max((o.max_abs for c in cases for o in c.outputs), default=0.0)
        state = "passed" if package.validation.passed else "FAILED"
        lines += ["", f"Validated against the .onnx on {len(cases)} cases: {state}, max abs error {worst:.3g}."]
    lines += ["", "Operators: " + ", ".join(f"`{op}`" for op in package.operator_list) + "."]
    return lines
