"""``quantize_file``: one ONNX graph in, its quantized form out, and what was done to which weight.

    src ─► weight sites ─► keep_float ─► prepare (work dir) ─► onnxruntime tool ─► checks ─► rename to dst

Everything is written in a private directory beside ``dst`` and renamed into place at the
end (external data first, then the graph), so ``dst`` is never half-written and ``src``'s
directory is never touched (onnxruntime's tools write shape-inferred copies beside their
input). Before the rename the output must keep every attention node and every activation
x activation MatMul as it was, and must load in onnxruntime's CPU EP.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from fastattn.errors import InputError
from fastattn.onnx_files import EXTERNAL_DATA_THRESHOLD  # weights above it go to <name>.data
from fastattn.quantize.modes import MODES
from fastattn.quantize.options import Job, Mode, QuantOptions, QuantResult, WeightSite
from fastattn.quantize.sites import WEIGHT_OPS, as_ir, protected_nodes, select, weight_sites

log = logging.getLogger(__name__)

__all__ = ["quantize_file", "weight_sites"]


def quantize_file(
    src: str | Path,
    dst: str | Path,
    options: QuantOptions,
    calibration: Iterable[dict[str, np.ndarray]] | None = None,
) -> QuantResult:
    """Quantize the ONNX graph ``src`` into ``dst`` as ``options`` say.

    ``calibration`` (int8-static only) yields feeds, one ``{input name: array}`` per batch;
    at most ``options.calibration_batches`` are read, one at a time (see :mod:`.calibration`).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InputError(f"{src} does not exist", "pass the .onnx file of an export")
    if dst.exists() and dst.resolve() == src.resolve():
        raise InputError(f"{dst} is the model being quantized", "write the quantized model to another path")
    model = as_ir(src)
    sites = weight_sites(model)
    chosen, kept = select(sites, options.keep_float, src.name)
    before = protected_nodes(model)
    chosen_names = {s.node for s in chosen}
    others = sorted(
        {
            n.name or ""
            for n in ir.traversal.RecursiveGraphIterator(model.graph)
            if n.op_type in WEIGHT_OPS and n.name not in chosen_names
        }
    )
    size_before = _size(src)
    external = _weight_bytes(model) > EXTERNAL_DATA_THRESHOLD
    dst.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        prepared = workdir / "input.onnx"
        _type_site_values(model, chosen)
        _save(model, prepared, external)
        job = Job(prepared, workdir / dst.name, chosen, others, options, workdir, external, calibration,
                  tuple(sorted(kept)))  # fmt: skip
        with _quiet_tools():
            tool_kept, settings = _run(job)
        kept.update(tool_kept)
        output = as_ir(job.dst)
        _check_unchanged(before, protected_nodes(output), options.mode)
        _check_loads(job.dst)
        ops = dict(Counter(n.op_type for n in output.graph))
        _commit(job.dst, dst)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = QuantResult(
        mode=options.mode,
        quantized=[s for s in sites if s.node not in kept],
        kept=[(s, kept[s.node]) for s in sites if s.node in kept],
        size_before=size_before,
        size_after=_size(dst),
        settings={"target": options.target.value, **settings},
        ops=ops,
    )
    log.info(
        "%s: %s, %d weights quantized, %d kept float, %d -> %d bytes",
        dst.name,
        options.mode.value,
        len(result.quantized),
        len(result.kept),
        result.size_before,
        result.size_after,
    )
    return result


def _run(job: Job) -> tuple[dict, dict]:
    """The mode's onnxruntime tool on ``job``: (sites it left float -> reason, settings)."""
    if not job.sites:
        _save(ir.load(job.src), job.dst, job.external)  # external data is named after the graph file
        return {}, {"note": "no weight site to quantize: the model is copied unchanged"}
    return MODES[job.options.mode].tool(job)


class _DropAdvice(logging.Filter):
    """onnxruntime's quantizers log "Please consider to run pre-processing" on the root logger each call;
    its symbolic pre-processing would re-type our graphs, which the tools do not need."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


@contextlib.contextmanager
def _quiet_tools() -> Iterator[None]:
    """Keep onnxruntime's per-node INFO lines and routine warnings out of the user's terminal."""
    noisy = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level, root, advice = noisy.level, logging.getLogger(), _DropAdvice()
    noisy.setLevel(logging.ERROR)
    root.addFilter(advice)
    try:
        yield
    finally:
        noisy.setLevel(level)
        root.removeFilter(advice)


def _type_site_values(model: ir.Model, sites: list[WeightSite]) -> None:
    """Give each site's activation input and output a tensor type when shape inference left it unknown
    (an If's outputs, a contrib op's): onnxruntime's quantizers skip or refuse untyped tensors."""
    names = {s.node for s in sites}
    for node in model.graph:
        if node.name not in names:
            continue
        dtype = node.inputs[1].const_value.dtype
        for value in (node.inputs[0], node.outputs[0]):
            if value is not None and value.type is None:
                value.type = ir.TensorType(dtype)


def _save(model: ir.Model, path: Path, external: bool) -> None:
    """Save with weights in ``<name>.data`` or embedded; weights still in the source's external file are
    read in first (onnx_ir would otherwise keep pointing at a file that is not beside ``path``)."""
    if external:
        ir.save(model, path, external_data=f"{path.name}.data", size_threshold_bytes=1024)
    else:
        ir.save(ir.external_data.load_to_model(model), path)


def _check_unchanged(before: dict, after: dict, mode: Mode) -> None:
    """Attention nodes and activation MatMuls must survive as they were (fp16 may rename their inputs)."""
    for name, (domain, op_type, inputs) in before.items():
        now = after.get(name)
        if now is None or now[:2] != (domain, op_type) or (not MODES[mode].renames_inputs and now[2] != inputs):
            raise RuntimeError(
                f"{mode.value} quantization changed protected node {name!r} ({op_type}): {now}"
            )


def _check_loads(path: Path) -> None:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises several exception types
        raise RuntimeError(f"the quantized model does not load in onnxruntime's CPU EP: {e}") from e


def _commit(staged: Path, dst: Path) -> None:
    """Rename the staged graph (and its external data) to ``dst``; an older dst's external data goes."""
    data = staged.with_name(staged.name + ".data")
    dst_data = dst.with_name(dst.name + ".data")
    staged_data = data.exists()
    if staged_data:
        os.replace(data, dst_data)
    os.replace(staged, dst)
    if not staged_data and dst_data.exists():
        dst_data.unlink()


def _size(path: Path) -> int:
    """Bytes of the graph file and of every external data file it names."""
    model = onnx.load(path, load_external_data=False)
    files = {
        e.value
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        for e in t.external_data
        if e.key == "location"
    }
    return path.stat().st_size + sum((path.parent / f).stat().st_size for f in files)


def _weight_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
