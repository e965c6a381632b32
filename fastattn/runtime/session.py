"""Run an exported model with ONNX Runtime: one :class:`GraphSession` per graph of the manifest.

Inputs are checked against the manifest before ONNX Runtime sees them, so a wrong name,
dtype, rank or size is one clear :class:`~fastattn.errors.InputError` instead of an ORT
stack trace. The dtype policy is strict:

* a NumPy array must have the manifest's dtype exactly; ``cast=True`` converts it, but
  only when every value survives (int64 → int32 overflow, float → int with fractions,
  int → float beyond the float's exact range are still errors; float narrowing such as
  float64 → float32 rounds, as asked);
* a Python list, tuple or scalar has no dtype of its own, so it is always converted under
  that same value-preserving rule.

Named dynamic dims must take one size across all inputs; a dim written ``a+b`` must equal
the sum of the sizes of ``a`` and ``b`` (one unknown part is solved from it).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fastattn.errors import InputError, LoadError, RunError
from fastattn.runtime import dims
from fastattn.runtime import providers as eps
from fastattn.runtime.generate import Generation, Sampling, StepCallback, generate
from fastattn.runtime.manifest import Fill, GraphEntry, Manifest, TensorSpec
from fastattn.runtime.ort_errors import ORT_ERRORS, fmt_sizes, run_error
from fastattn.runtime.samples import sample_inputs

logger = logging.getLogger(__name__)

ProviderRequest = str | Sequence[str | tuple[str, Mapping[str, str]]]
_UNTYPED = (list, tuple, int, float, bool)  # Python values: converted by value


@dataclass(frozen=True)
class SessionConfig:
    """How each ``ort.InferenceSession`` is built."""

    threads: int | None = None  # intra-op threads; None lets ORT choose (one per physical core)
    optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    disabled_optimizers: tuple[str, ...] = ()  # ORT graph optimizers to skip (the manifest's ``session``)
    # Graphs whose sessions run without ORT's memory patterns (the manifest's ``session``):
    # decoders with bounded caches, whose memory must stay flat (see exporter.pipeline)
    memory_pattern_off: tuple[str, ...] = ()
    # The manifest's kv_buffer: the graphs' attention is exact for unpadded rows only
    unpadded_rows: bool = False

    def session_options(self, providers: Sequence[eps.ProviderEntry]) -> ort.SessionOptions:
        """ORT session options for this config and these providers."""
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be at least 1, got {self.threads}", "pass a positive count")
        options = ort.SessionOptions()
        options.graph_optimization_level = self.optimization
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        eps.configure(options, providers)
        return options


def _fmt_shape(shape: Sequence[object]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _cast(name: str, arr: np.ndarray, want: np.dtype, source: str) -> np.ndarray:
    """``arr`` as ``want`` when every value survives the conversion; else an InputError."""
    if arr.dtype.kind not in "biuf":
        raise InputError(f"input {name!r} is {source} of {arr.dtype}, not numbers", f"pass {want} data")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = arr.astype(want)
        if arr.dtype.kind == "f" and want.kind == "f":
            ok = not np.any(np.isfinite(arr) & ~np.isfinite(out))  # rounding is fine, overflow is not
        else:  # the range check catches wrap-around that survives a round trip (uint64 <-> int64)
            ok = np.array_equal(out.astype(arr.dtype), arr) and (
                want.kind not in "iu"
                or arr.size == 0
                or (np.iinfo(want).min <= arr.min() and arr.max() <= np.iinfo(want).max)
            )
    if not ok:
        raise InputError(
            f"input {name!r} is {source} whose values do not all convert exactly to {want}",
            f"pass {want} data with values in range",
        )
    return np.ascontiguousarray(out)


def _as_array(spec: TensorSpec, value: object, cast: bool) -> np.ndarray:
    """The value as a contiguous array of the spec's dtype, under the module's dtype policy."""
    want = np.dtype(spec.dtype)
    if isinstance(value, _UNTYPED):
        try:
            arr = np.asarray(value)
        except ValueError as e:
            raise InputError(f"input {spec.name!r} is not a rectangular array ({e})", "pass an array") from e
        return _cast(spec.name, arr, want, f"a Python {type(value).__name__}")
    arr = np.asarray(value)
    if arr.dtype == want:
        return np.ascontiguousarray(arr)
    if not cast:
        raise InputError(
            f"input {spec.name!r} has dtype {arr.dtype}, the model expects {want}",
            f"pass {want} data (x.astype(np.{want})) or run with cast=True",
        )
    return _cast(spec.name, arr, want, f"a {arr.dtype} array")


def _bind_sizes(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Check ranks and fixed dims, bind each named dim to one size, check ``a+b``, ``min(a,K)`` and
    ``summarized(a,B)`` dims."""
    sizes: dict[str, int] = {}
    where: dict[str, str] = {}  # dim -> "input 'x' (axis 0)", where its size was first seen
    exprs: list[tuple[TensorSpec, int, str, dims.DimExpr]] = []
    for spec in specs:
        shape = feeds[spec.name].shape
        if len(shape) != len(spec.shape):
            raise InputError(
                f"input {spec.name!r} has rank {len(shape)} (shape {_fmt_shape(shape)}), "
                f"the model expects rank {len(spec.shape)} {_fmt_shape(spec.shape)}",
                f"pass a {len(spec.shape)}-D array",
            )
        for axis, (dim, size) in enumerate(zip(spec.shape, shape, strict=True)):
            here = f"input {spec.name!r} (axis {axis})"
            if isinstance(dim, int):
                if size != dim:
                    raise InputError(
                        f"input {spec.name!r} has shape {_fmt_shape(shape)}, the model expects "
                        f"{_fmt_shape(spec.shape)}: axis {axis} is {size}, not {dim}",
                        f"give axis {axis} size {dim}",
                    )
                continue
            expr = dims.parse(dim)
            if len(expr.parts) > 1 or expr.cap is not None or expr.block is not None:
                exprs.append((spec, axis, dim, expr))
            elif dim not in sizes:
                sizes[dim], where[dim] = size, here
            elif sizes[dim] != size:
                raise InputError(
                    f"dim {dim!r} is {sizes[dim]} in {where[dim]} but {size} in {here}",
                    f"give every input the same {dim} size",
                )
    pending = exprs
    while pending:
        unsolved = []
        for spec, axis, dim, expr in pending:
            size = feeds[spec.name].shape[axis]
            unknown = [p for p in expr.parts if p not in sizes]
            known = sum(sizes[p] for p in expr.parts if p in sizes)
            total = "+".join(expr.parts)
            if expr.cap is not None and size > expr.cap:
                raise InputError(
                    f"input {spec.name!r} axis {axis} is {size}, more than the {expr.cap} of {dim}",
                    f"keep only the last {expr.cap} positions of {spec.name!r} (the model's present does)",
                )
            if not unknown and expr.size(sizes) != size:
                values = "+".join(str(sizes[p]) for p in expr.parts)
                if expr.block is not None:
                    raise InputError(
                        f"input {spec.name!r} axis {axis} is {size}, but {dim} is {known}//{expr.block} + "
                        f"{known}%{expr.block} = {expr.size(sizes)}",
                        f"feed back the present of the previous call as {spec.name!r} (a hierarchical layer's cache "
                        f"holds one summary per complete block of {expr.block} and the open block's keys)",
                    )
                got = f"{values} = {known}" if expr.cap is None else f"min({values},{expr.cap}) = {expr.size(sizes)}"
                raise InputError(
                    f"input {spec.name!r} axis {axis} is {size}, but {dim} is {got}",
                    f"make axis {axis} of {spec.name!r} {'the sum ' + total if expr.cap is None else dim}",
                )
            if len(unknown) == 1 and expr.solvable and (expr.cap is None or size < expr.cap):
                if size < known:
                    raise InputError(
                        f"input {spec.name!r} axis {axis} is {size}, less than the known part of {total} "
                        f"({known})",
                        f"make axis {axis} of {spec.name!r} the sum {total}",
                    )
                sizes[unknown[0]] = size - known
            elif unknown:
                unsolved.append((spec, axis, dim, expr))
        if len(unsolved) == len(pending):
            break  # unknown parts left: nothing more to check
        pending = unsolved
    return sizes


def check_inputs(
    specs: Sequence[TensorSpec], inputs: Mapping[str, object], cast: bool = False, graph: str = "model"
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Inputs checked against the specs: the feeds for ORT and the size of each named dim."""
    expected = [s.name for s in specs]
    listed = ", ".join(expected)
    unknown = [n for n in inputs if n not in expected]
    if unknown:
        raise InputError(
            f"graph {graph!r} has no input {', '.join(map(repr, unknown))}; its inputs are {listed}",
            "pass only the graph's inputs",
        )
    missing = [n for n in expected if n not in inputs]
    if missing:
        raise InputError(
            f"graph {graph!r} is missing input {', '.join(map(repr, missing))}; its inputs are {listed}",
            "pass every input",
        )
    feeds = {s.name: _as_array(s, inputs[s.name], cast) for s in specs}
    sizes = _bind_sizes(specs, feeds)
    empty = [d for d, n in sizes.items() if n == 0 and not d.startswith("past")]
    if empty:
        raise InputError(f"graph {graph!r}: dim {empty[0]!r} is 0, so there is nothing to run",
                         f"give {empty[0]} a size of at least 1")  # fmt: skip
    for spec in specs:
        _check_values(spec, feeds[spec.name])
    return feeds, sizes


def _check_values(spec: TensorSpec, array: np.ndarray) -> None:
    """Token ids inside the vocabulary, masks of 0 and 1: ONNX Runtime would fail on the first with a
    traceback, or silently wrap -1 to the last token, and read the second as a weight."""
    if not array.size:
        return
    if spec.fill is Fill.TOKENS and spec.high:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= spec.high:
            raise InputError(f"input {spec.name!r} has token ids from {low} to {high}, outside the vocabulary "
                             f"[0, {spec.high})", f"pass ids from 0 to {spec.high - 1}")  # fmt: skip
    elif spec.fill is Fill.MASK and not np.isin(array, (0, 1)).all():
        bad = array[~np.isin(array, (0, 1))].ravel()[0].item()
        raise InputError(f"input {spec.name!r} is a mask but holds {bad!r}", "use 1 for tokens and 0 for padding")


def graph_dims(entry: GraphEntry) -> list[str]:
    """The named dynamic dims of a graph's inputs, in order of first appearance (``a+b`` gives a and b)."""
    out: list[str] = []
    for spec in entry.inputs:
        for dim in spec.dims():
            out += [p for p in dims.names(dim) if p not in out]
    return out


def sample_graph(entry: GraphEntry, sizes: Mapping[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs, filled as the manifest says, at the given dim sizes; sizes of other dims are ignored."""
    dims = graph_dims(entry)
    missing = [d for d in dims if d not in sizes]
    if missing:
        raise InputError(
            f"graph {entry.name!r} needs a size for dim {', '.join(map(repr, missing))}",
            f"give sizes for {', '.join(dims)}",
        )
    bad = {d: s for d, s in sizes.items() if isinstance(s, bool) or not isinstance(s, int) or s < 0}
    if bad:
        raise InputError(f"dim sizes must be integers >= 0, got {bad}", "pass non-negative integer sizes")
    return sample_inputs(entry.inputs, dict(sizes), np.random.default_rng(seed))


class GraphSession:
    """One ``ort.InferenceSession`` for one graph of the manifest, with its inputs checked."""

    def __init__(
        self,
        entry: GraphEntry,
        path: str | os.PathLike,
        providers: Sequence[eps.ProviderEntry] = (eps.CPU,),
        config: SessionConfig = SessionConfig(),
    ):
        self.entry = entry
        self.path = Path(path)
        self.unpadded_rows = config.unpadded_rows
        self.requested = eps.ort_names(providers)
        if not self.path.is_file():
            raise InputError(f"{self.path} is missing (graph {entry.name!r})", "re-export the model")
        options = config.session_options(providers)
        if entry.name in config.memory_pattern_off:
            options.enable_mem_pattern = False
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=list(providers),
                disabled_optimizers=list(config.disabled_optimizers) or None,
            )  # fmt: skip
        except ORT_ERRORS as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise LoadError(f"ONNX Runtime cannot load {self.path}: {reason}", "re-export the model") from e
        self._check_against_manifest()
        self.providers: list[str] = self.session.get_providers()
        if self.requested and self.requested[0] not in self.providers:
            logger.warning(
                "graph %r runs on %s, not the requested %s (ONNX Runtime fell back)",
                entry.name, ", ".join(self.providers), self.requested[0],
            )  # fmt: skip

    def _check_against_manifest(self) -> None:
        for kind, actual, specs in (
            ("inputs", self.session.get_inputs(), self.entry.inputs),
            ("outputs", self.session.get_outputs(), self.entry.outputs),
        ):
            if sorted(a.name for a in actual) != sorted(s.name for s in specs):
                raise LoadError(
                    f"{self.path.name} has {kind} {[a.name for a in actual]} but the manifest lists "
                    f"{[s.name for s in specs]}",
                    "re-export the model",
                )

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def fell_back(self) -> bool:
        """True when ORT does not use the first requested provider (it silently chose another)."""
        return bool(self.requested) and self.requested[0] not in self.providers

    def dims(self) -> list[str]:
        """The named dynamic dims of the inputs, in order of first appearance (``a+b`` gives a and b)."""
        return graph_dims(self.entry)

    def check(self, inputs: Mapping[str, object], cast: bool = False) -> dict[str, np.ndarray]:
        """The inputs checked against the manifest and ready to feed (see the module's dtype policy)."""
        return check_inputs(self.entry.inputs, inputs, cast, self.name)[0]

    def run(self, inputs: Mapping[str, object], cast: bool = False) -> dict[str, np.ndarray]:
        """Check the inputs, run the graph, return its outputs by name."""
        feeds = self.check(inputs, cast)
        if self.unpadded_rows:
            for spec in self.entry.inputs:
                if spec.fill is Fill.MASK and not feeds[spec.name].all():
                    raise InputError(
                        f"input {spec.name!r} has padding, but this export (--kv-buffer) takes unpadded rows only",
                        "run rows of one length without padding, or export without --kv-buffer",
                    )
        names = [o.name for o in self.session.get_outputs()]
        try:
            return dict(zip(names, self.session.run(names, feeds), strict=True))
        except MemoryError as e:
            raise RunError(f"graph {self.name!r} ran out of memory at {fmt_sizes(feeds)}",
                           "run a smaller batch or shorter sequence") from e  # fmt: skip
        except ORT_ERRORS as e:
            raise run_error(self.name, e, feeds) from e

    def sample(self, sizes: Mapping[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        """Random inputs for this graph at the given dim sizes (see :func:`sample_graph`)."""
        return sample_graph(self.entry, sizes, seed)


class ExportedModel:
    """An output directory of ``fastattn export``: its manifest and one lazily built session per graph."""

    def __init__(
        self,
        directory: str | os.PathLike,
        manifest: Manifest,
        providers: Sequence[eps.ProviderEntry],
        config: SessionConfig = SessionConfig(),
    ):
        self.directory = Path(directory)
        self.manifest = manifest
        self.requested_providers = list(providers)
        self.config = config
        self._sessions: dict[str, GraphSession] = {}

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        provider: ProviderRequest = "cpu",
        threads: int | None = None,
        optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        available: Sequence[str] | None = None,
    ) -> ExportedModel:
        """Read the manifest, resolve the providers (``"cuda"``, ``"cuda,cpu"`` or a list); no session yet."""
        return cls.from_manifest(directory, Manifest.load(directory), provider, threads, optimization, available)

    @classmethod
    def from_manifest(
        cls,
        directory: str | os.PathLike,
        manifest: Manifest,
        provider: ProviderRequest = "cpu",
        threads: int | None = None,
        optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        available: Sequence[str] | None = None,
    ) -> ExportedModel:
        """The graphs in ``directory`` described by ``manifest`` (an export being written has none on disk yet)."""
        names = [p for p in provider.split(",") if p.strip()] if isinstance(provider, str) else provider
        config = SessionConfig(threads, optimization, tuple(manifest.session.disabled_optimizers),
                               tuple(manifest.session.memory_pattern_off), manifest.kv_buffer is not None)  # fmt: skip
        config.session_options([])  # reject a bad thread count now, not at the first run
        return cls(directory, manifest, eps.resolve(names, available), config)

    def graph(self, name: str | None = None) -> GraphSession:
        """The session of graph ``name`` (the only graph when None), built on first use."""
        entry = self.manifest.graph(name)
        if entry.name not in self._sessions:
            path = self.manifest.path_of(self.directory, entry.file)
            self._sessions[entry.name] = GraphSession(entry, path, self.requested_providers, self.config)
        return self._sessions[entry.name]

    @property
    def providers(self) -> list[str]:
        """The providers ORT actually uses, read from the first graph's session (built if needed)."""
        return self.graph(self.manifest.graphs[0].name).providers

    def run(
        self, inputs: Mapping[str, object], graph: str | None = None, cast: bool = False
    ) -> dict[str, np.ndarray]:
        """Run one graph (the only one when None) and return its outputs by name."""
        return self.graph(graph).run(inputs, cast)

    def sample(
        self, graph: str | None = None, sizes: Mapping[str, int] | None = None, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """Random inputs for one graph at these dim sizes (``fastattn run --random``); builds no session."""
        return sample_graph(self.manifest.graph(graph), sizes or {}, seed)

    def generate(
        self,
        prompt_ids: Sequence[int] | Sequence[Sequence[int]] | np.ndarray,
        max_new_tokens: int = 32,
        sampling: Sampling = Sampling(),
        stop_ids: Sequence[int] | None = None,
        on_step: StepCallback | None = None,
        pad_id: int | None = None,
        decoder_start: int | None = None,
    ) -> Generation:
        """New tokens after one prompt or a batch of them, greedy by default (:mod:`fastattn.runtime.generate`);
        stop ids, pad id and decoder start default to a Hugging Face model's own (the manifest's ``hf``)."""
        return generate(self, prompt_ids, max_new_tokens, sampling, stop_ids, on_step, pad_id, decoder_start)


load = ExportedModel.load
