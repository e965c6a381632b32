"""Calibration data for ``int8-static``: streamed feeds and onnxruntime's calibrators, memory bounded.

Feeds come from an iterator and are never gathered in a list: :class:`FeedReader` hands
onnxruntime one batch at a time, and :func:`collect_ranges` calls the calibrator once per
batch, so at most one batch of activations is alive. Sources:

- :func:`npz_batches`: a user's ``.npz`` (format in its docstring);
- :func:`sample_batches`: random feeds from the manifest's tensor specs;
- any iterable of ``{input name: array}`` (the export pipeline's held-out data).

Decoders with a KV cache calibrate on prefill: past inputs are empty (``past_sequence = 0``).

What onnxruntime 1.32's calibrators hold in memory (read in ``calibrate.py`` and measured
on this machine):

- MinMax keeps, per batch, only the ReduceMin/ReduceMax outputs it adds to the graph
  (one value per calibrated tensor; the model's own outputs are dropped), so many batches
  cost almost nothing. Its ``CalibMaxIntermediateOutputs`` option is *not* used: in 1.32 a
  flush clears the collected batches without merging them, so the ranges then come from the
  last partial chunk only (5 batches with the option at 2: the ranges were those of batch 5).
- Entropy and Percentile keep every calibrated activation of every batch given to one
  ``collect_data`` call before building histograms: with one call for all batches, memory
  grows with the number of batches. Calling it per batch (as here) merges into the same
  histograms and keeps one batch alive. Peak RSS, 16 batches of (4, 256) tokens on a
  6-layer d=512 decoder: Entropy 3.8 GB in one call, 0.54 GB per batch; MinMax 0.70 GB
  either way (the session's own activations).
- Ranges are asymmetric (``CalibTensorRangeSymmetric`` off) to suit uint8 activations;
  Percentile keeps onnxruntime's symmetric default at the 99.999th percentile.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization import CalibrationMethod as OrtMethod
from onnxruntime.quantization.calibrate import TensorsData, create_calibrator

from fastattn.errors import InputError
from fastattn.quantize.options import CalibrationMethod
from fastattn.runtime import dims
from fastattn.runtime.manifest import Fill, GraphEntry, TensorSpec
from fastattn.runtime.samples import sample_inputs

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]
ORT_METHODS = {
    CalibrationMethod.MINMAX: OrtMethod.MinMax,
    CalibrationMethod.ENTROPY: OrtMethod.Entropy,
    CalibrationMethod.PERCENTILE: OrtMethod.Percentile,
}


class FeedReader(CalibrationDataReader):
    """A :class:`CalibrationDataReader` over an iterator of feeds: at most ``limit``, one at a time.

    :meth:`next_batch` loads the next feed; :meth:`get_next` hands it out once, then returns
    None, which ends one ``collect_data`` call of a calibrator."""

    def __init__(self, feeds: Iterable[Feeds], limit: int | None = None, names: set[str] | None = None):
        self._feeds = iter(feeds)
        self._limit = limit
        self._names = names  # the graph's inputs: checked, and extra arrays dropped
        self._current: Feeds | None = None
        self.count = 0

    def next_batch(self) -> bool:
        if self._limit is not None and self.count >= self._limit:
            return False
        self._current = next(self._feeds, None)
        if self._current is None:
            return False
        self.count += 1
        if self._names is not None:
            self._current = _checked(self._current, self._names, self.count)
        return True

    def get_next(self) -> Feeds | None:
        current, self._current = self._current, None
        return current


def collect_ranges(
    model: Path,
    feeds: Iterable[Feeds],
    method: CalibrationMethod,
    op_types: Sequence[str],
    workdir: Path,
    limit: int,
) -> tuple[TensorsData, int]:
    """Run the calibrator of ``method`` over at most ``limit`` feeds; the ranges and the batches used."""
    extra = {"symmetric": False} if method is not CalibrationMethod.PERCENTILE else {}
    calibrator = create_calibrator(
        model,
        list(op_types),
        augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=ORT_METHODS[method],
        extra_options=extra,
        providers=["CPUExecutionProvider"],
    )
    reader = FeedReader(feeds, limit, {i.name for i in calibrator.infer_session.get_inputs()})
    chatter = io.StringIO()  # the histogram calibrators print progress to stdout
    with contextlib.redirect_stdout(chatter):
        while reader.next_batch():
            calibrator.collect_data(reader)
        if reader.count == 0:
            raise InputError("no calibration batches were given", "pass an .npz with at least one sample")
        ranges = calibrator.compute_data()
    log.debug("calibrator output: %s", chatter.getvalue().strip())
    del calibrator
    return ranges, reader.count


def npz_batches(path: str | Path, inputs: Sequence[TensorSpec], batch_size: int = 1) -> Iterator[Feeds]:
    """Feeds read from a ``.npz`` of calibration (or evaluation) samples, ``batch_size`` samples each.

    Format: one array per graph input, named after it (``input_ids``, ``attention_mask``, …),
    its first axis the sample (a batch of N samples is fine: they are split along it), the
    other axes as the input's shape, e.g. ``input_ids`` (N, S) int64. All arrays share N.
    Integer arrays are cast to the input's integer dtype, float to its float dtype.
    Inputs that may be left out: the KV cache (``past_*``, any input with a ``past``
    dimension), given empty, and a padding mask (all ones). Any other missing input is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"calibration file {path} does not exist", "pass the path of an .npz file")
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable .npz ({e})", "write it with numpy.savez") from e
    specs = {s.name: s for s in inputs}
    missing = [s.name for s in inputs if s.name not in arrays and not _fillable(s)]
    if missing:
        raise InputError(
            f"{path.name} has no array for input(s) {', '.join(missing)} "
            f"(it has {', '.join(sorted(arrays)) or 'none'})",
            f"save one array per graph input, named after it: numpy.savez(path, {missing[0]}=...)",
        )
    extra = sorted(set(arrays) - set(specs))
    if extra:
        log.info("%s: ignoring arrays %s (not inputs of the graph)", path.name, ", ".join(extra))
    given = {n: _cast(a, specs[n], path) for n, a in arrays.items() if n in specs}
    counts = {len(a) for a in given.values()}
    if len(counts) != 1:
        shapes = ", ".join(f"{n} {a.shape}" for n, a in given.items())
        raise InputError(
            f"{path.name}: arrays differ in their first (sample) axis: {shapes}",
            "give every input the same number of samples",
        )
    total = counts.pop()
    for start in range(0, total, batch_size):
        batch = {n: a[start : start + batch_size] for n, a in given.items()}
        yield _complete(batch, inputs, path.name)


def sample_batches(graph: GraphEntry, sizes: dict[str, int], n: int, seed: int = 0) -> Iterator[Feeds]:
    """``n`` random feeds from the graph's tensor specs at ``sizes`` (prefill: ``past_sequence`` is 0)."""
    sizes = {**sizes, **{dims.names(d)[0]: 0 for s in graph.inputs for d in s.dims() if _is_past_dim(d)}}
    for i in range(n):
        yield sample_inputs(graph.inputs, sizes, np.random.default_rng(seed + i))


def _is_past_dim(dim: str) -> bool:
    """A cache length: ``past_sequence``, or capped, ``min(past_sequence,K)`` (not ``past+sequence``)."""
    parts = dims.names(dim)
    return len(parts) == 1 and parts[0].startswith("past")


def _fillable(spec: TensorSpec) -> bool:
    return spec.fill is Fill.MASK or any(_is_past_dim(d) for d in spec.dims())


def _cast(array: np.ndarray, spec: TensorSpec, source: str) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if array.dtype == want:
        return array
    if array.dtype.kind in "iub" and want.kind in "iub" or array.dtype.kind == "f" and want.kind == "f":
        return array.astype(want)
    raise InputError(
        f"{source}: array {spec.name!r} is {array.dtype}, the input is {want}", f"save {spec.name} as {want}"
    )


def _complete(batch: Feeds, inputs: Sequence[TensorSpec], source: str) -> Feeds:
    """Add empty caches and all-ones masks for inputs the file left out, sized from the given arrays."""
    sizes: dict[str, int] = {}
    for spec in inputs:
        if spec.name in batch:
            array = batch[spec.name]
            if array.ndim != len(spec.shape):
                raise InputError(
                    f"{source}: array {spec.name!r} has shape {array.shape}, the input has "
                    f"{len(spec.shape)} axes {spec.shape}",
                    "save one sample per row",
                )
            for dim, size in zip(spec.shape, array.shape, strict=True):
                if isinstance(dim, str) and dims.parse(dim) == dims.DimExpr((dim,)):
                    sizes.setdefault(dim, size)
    for spec in inputs:
        for dim in spec.dims():
            if _is_past_dim(dim):
                sizes.setdefault(dims.names(dim)[0], 0)
    out = dict(batch)
    for spec in inputs:
        if spec.name in out:
            continue
        try:
            shape = spec.concrete_shape(sizes)
        except KeyError as e:
            raise InputError(
                f"{source}: cannot size input {spec.name!r} (dim {e} unknown)",
                f"save an array named {spec.name}",
            ) from None
        out[spec.name] = (
            np.ones(shape, dtype=spec.dtype) if spec.fill is Fill.MASK else np.zeros(shape, spec.dtype)
        )
    return out


def _checked(feeds: Feeds, names: set[str], index: int) -> Feeds:
    missing = sorted(names - set(feeds))
    if missing:
        raise InputError(
            f"calibration batch {index} lacks input(s) {', '.join(missing)}",
            "give every batch one array per graph input",
        )
    return {n: a for n, a in feeds.items() if n in names}
