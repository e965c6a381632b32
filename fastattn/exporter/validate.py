"""Validation: PyTorch and ONNX Runtime on the same inputs, at shapes other than the traced ones.

Each graph is checked over a list of cases (dim sizes, padded or not). Graphs with a
cache are also run as a decoder runs: a prefill from an empty cache, then single-token
steps, each side feeding its own ``present`` back as ``past``. Every output gets max
abs error, max rel error (max abs error over the largest |reference| value), mean abs
error and cosine similarity; the worst over the steps of a case is kept.

An output passes when NaNs appear in the same places and, for float exports,
``max_abs <= atol + rtol·max|ref|`` and ``cosine >= min_cosine``; quantized exports, whose
accuracy their task gate judges, have no element-wise bound: their cosine, whole and per
batch row, must reach a bound that catches broken graphs only (see TOLERANCES). Each
output also records the least per-token cosine and, for logits, top-1 agreement.
Positions whose token is padding (mask 0) are left out: what a model computes there has
no meaning, and kernels legitimately differ. A failure is an error for the caller to raise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from fastattn.errors import ExportError
from fastattn.families.graphs import GraphDef, mha_fastpath
from fastattn.runtime import schema
from fastattn.runtime.manifest import Fill, Precision
from fastattn.runtime.records import CaseRecord, OutputStats, Tolerance, ValidationRecord
from fastattn.runtime.samples import sample_inputs

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
Runner = Callable[[Mapping[str, np.ndarray]], Arrays]


# Quantized models are gated on task accuracy (quantize/gates.py); validation only catches a broken graph (a
# weight lost, a mask ignored, a wrong decode path, NaN), so it has no max-abs / max-rel bound: a correct int8
# quantization moves single elements a lot (max rel 0.12 on a tiny Llama), and int4 of tiny random checkpoints
# more (1.07). Each output must be finite where the reference is, and its cosine with the reference, whole, per
# batch row and per token (padding left out), must reach the bounds. The bounds lie between the worst correct export and
# the best broken copy measured (benchmarks/results/quantized_validation.md; ``basis`` says so in every record).
# fp16 keeps element-wise bounds: it moved the present keys of a tiny encoder-decoder by 0.0126 (cosine 0.999995).
_INT8_BASIS = (
    "quantized: the gate judges accuracy; these bounds catch broken graphs. Measured "
    "(benchmarks/results/quantized_validation.md): correct int8 exports (MiniLM-L6, a trained byte LM, a random "
    "6x512 Llama, tiny Hugging Face checkpoints) reach row and token cosine >= 0.991 (worst: tiny Llama), and a "
    "tiny random Qwen2 token cosine 0.967 at 323 tokens, 20 times its window (hf_families.md before its "
    "checkpoints were seeded); their broken copies (first or last quantized weight zeroed, attention mask "
    "ignored) at best 0.814 per row and 0.775 per token (tiny BERT, mask ignored); 0.98 and 0.9 lie between."
)
_INT4_BASIS = (
    "quantized: the gate judges accuracy; these bounds catch broken graphs. Measured "
    "(benchmarks/results/quantized_validation.md): correct int4 exports reach row cosine >= 0.600 and token "
    "cosine >= 0.548 (worst: tiny random Llama and Mistral; the trained byte LM 0.997 and 0.973); their broken "
    "copies at best 0.520 per row (tiny Mistral, mask ignored) and -0.152 per token; 0.55 and 0.2 lie between. "
    "Known miss: a random 6x512 Llama with its last int4 weight zeroed (0.938 and 0.902) moves less than int4 "
    "moves tiny random models."
)
TOLERANCES = {
    Precision.FP32: Tolerance(atol=1e-5, rtol=1e-4, min_cosine=0.99999),
    Precision.FP16: Tolerance(atol=1e-3, rtol=3e-2, min_cosine=0.999),
    Precision.INT8: Tolerance(None, None, 0.98, min_row_cosine=0.98, min_token_cosine=0.9, basis=_INT8_BASIS),
    Precision.INT4: Tolerance(None, None, 0.55, min_row_cosine=0.55, min_token_cosine=0.2, basis=_INT4_BASIS),
}


_SHORT = {"sequence": "seq", "past_sequence": "past", "encoder_sequence": "enc_seq"}


@dataclass(frozen=True)
class Case:
    """One validation run of a graph: dim sizes, padding, and decode steps after the first call."""

    graph: str
    sizes: dict[str, int]
    padded: bool = False
    steps: int = 0

    @property
    def name(self) -> str:
        dims = " ".join(f"{_SHORT.get(k, k)}={v}" for k, v in self.sizes.items())
        return dims + (" padded" if self.padded else "") + (f" +{self.steps} steps" if self.steps else "")


@dataclass
class CaseResult:
    case: Case
    outputs: list[OutputStats]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)


@dataclass
class ValidationResult:
    tolerance: Tolerance
    precision: Precision
    cases: list[CaseResult] = field(default_factory=list)
    against: str = "PyTorch"  # what the outputs were compared with

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    def failures(self) -> list[tuple[Case, OutputStats]]:
        return [(c.case, o) for c in self.cases for o in c.outputs if not o.passed]

    def worst(self) -> OutputStats | None:
        """The output with the largest error relative to its tolerance."""
        stats = [o for c in self.cases for o in c.outputs]
        return max(stats, key=lambda o: o.max_rel, default=None)

    def record(self) -> ValidationRecord:
        cases = [CaseRecord(c.case.graph, c.case.name, dict(c.case.sizes), c.case.padded, c.case.steps, c.passed,
                            list(c.outputs)) for c in self.cases]  # fmt: skip
        return ValidationRecord(self.passed, self.precision.value, self.tolerance, cases, self.against)

    def to_dict(self) -> dict:
        return schema.dump(self.record())


def compare(
    name: str, got: np.ndarray, want: np.ndarray, tol: Tolerance, valid: np.ndarray | None = None
) -> OutputStats:
    """Error statistics of one output against its reference, over the ``valid`` positions (all if None)."""
    if got.shape != want.shape:
        return OutputStats(name, float("inf"), float("inf"), float("inf"), 0.0, False,
                           f"shape {got.shape} != reference {want.shape}")  # fmt: skip
    full_a, full_b = got.astype(np.float64), want.astype(np.float64)
    keep = np.ones(want.shape, bool) if valid is None else np.broadcast_to(valid, want.shape)
    a, b = full_a[keep], full_b[keep]
    if a.size == 0:
        return OutputStats(name, 0.0, 0.0, 0.0, 1.0, True, "empty")
    finite_b = np.isfinite(b)
    if (~np.isfinite(a) & finite_b).any():
        return OutputStats(name, float("nan"), float("nan"), float("nan"), 0.0, False,
                           "NaN or Inf where the reference is finite")  # fmt: skip
    if not finite_b.all():  # non-finite references must be matched exactly, and leave something to compare
        same = np.array_equal(a[~finite_b], b[~finite_b], equal_nan=True)
        if not same or finite_b.sum() == 0:
            return OutputStats(name, float("nan"), float("nan"), float("nan"), 0.0, False,
                               "the reference is NaN or Inf here" + ("" if same else " and the output differs"))  # fmt: skip
        a, b = a[finite_b], b[finite_b]
        keep = keep & np.isfinite(full_b)
    diff = np.abs(a - b)
    max_abs, scale = float(diff.max()), float(np.abs(b).max())
    cosine = _cosine(a, b)
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    rows, tokens = _row_cosine(full_a, full_b, keep), _token_cosine(full_a, full_b, keep)
    top1 = _top1(full_a, full_b, keep) if name == LOGITS else None
    passed = cosine >= tol.min_cosine
    if tol.elementwise:
        passed = passed and max_abs <= tol.atol + tol.rtol * scale  # type: ignore[operator]
    if tol.min_row_cosine is not None and rows is not None:
        passed = passed and rows >= tol.min_row_cosine
    if tol.min_token_cosine is not None and tokens is not None:
        passed = passed and tokens >= tol.min_token_cosine
    if tol.min_top1 is not None and top1 is not None:
        passed = passed and top1 >= tol.min_top1
    return OutputStats(name, max_abs, max_rel, float(diff.mean()), cosine, passed, "", rows, tokens, top1)


LOGITS = "logits"  # the output whose argmax is a prediction (next token, class): top-1 agreement is measured


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms > 0:
        return float(a @ b / norms)
    return 1.0 if not (a - b).any() else 0.0


def _row_cosine(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> float | None:
    """The least cosine of one batch row (its kept positions); None for outputs without a batch of rows."""
    if a.ndim < 2:
        return None
    found = [_cosine(a[i][keep[i]], b[i][keep[i]]) for i in range(a.shape[0]) if keep[i].any()]
    return min(found, default=None)


def _vectors(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The vectors along the last axis whose every entry is kept."""
    if a.ndim < 2 or a.shape[-1] < 2:
        return None
    whole = keep.reshape(-1, a.shape[-1]).all(axis=1)
    if not whole.any():
        return None
    return a.reshape(-1, a.shape[-1])[whole], b.reshape(-1, b.shape[-1])[whole]


def _token_cosine(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> float | None:
    """The least cosine of one vector along the last axis (a token's hidden state or logits, a head's key)."""
    vectors = _vectors(a, b, keep)
    if vectors is None:
        return None
    x, y = vectors
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    same = ~(x - y).any(axis=1)
    cos = np.where(norms > 0, (x * y).sum(axis=1) / np.where(norms > 0, norms, 1.0), np.where(same, 1.0, 0.0))
    return float(cos.min())


def _top1(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> float | None:
    """The share of positions where the argmax over the last axis agrees."""
    vectors = _vectors(a, b, keep)
    if vectors is None:
        return None
    x, y = vectors
    return float((x.argmax(axis=1) == y.argmax(axis=1)).mean())


def torch_runner(graph: GraphDef) -> Runner:
    """Run the graph's PyTorch reference on numpy inputs; outputs by the graph's output names.

    The reference is the user's original module when the exported one is a rewritten copy.
    nn.Transformer*'s fast path is off: it zeroes padded positions, which is not the model's math.
    """
    module = graph.reference if graph.reference is not None else graph.module
    if isinstance(module, torch.export.ExportedProgram):
        module = module.module()

    def run(feeds: Mapping[str, np.ndarray]) -> Arrays:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in graph.inputs]
        with torch.no_grad(), mha_fastpath(False):
            out = module(*args)
        flat = _flatten(out)
        return {s.name: t.detach().numpy() for s, t in zip(graph.outputs, flat)}

    return run


def _flatten(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        out = list(out.values())
    return [t for item in out for t in _flatten(item)]


def run_case(graph: GraphDef, case: Case, reference: Runner, candidate: Runner, tol: Tolerance) -> CaseResult:
    """Run one case (and its decode steps) on both sides and keep each output's worst statistics."""
    feeds = sample_inputs(graph.inputs, case.sizes, np.random.default_rng(len(case.name)), padded=case.padded)
    ref_feeds, cand_feeds = dict(feeds), dict(feeds)
    worst: dict[str, OutputStats] = {}
    rng = np.random.default_rng(1)
    for step in range(case.steps + 1):
        want, got = reference(ref_feeds), candidate(cand_feeds)
        for spec in graph.outputs:
            if spec.name not in got:
                worst[spec.name] = OutputStats(spec.name, float("inf"), float("inf"), float("inf"), 0.0, False,
                                               "missing from ONNX Runtime outputs")  # fmt: skip
                continue
            valid = valid_positions(graph, cand_feeds, spec, want[spec.name])
            a, b = got[spec.name], want[spec.name]
            if valid is not None and a.shape != b.shape:
                valid = None
            finite = b if valid is None else b[valid]  # padded positions carry no meaning: kernels may differ there
            if b.dtype.kind in "fc" and not np.isfinite(finite).all():
                raise ExportError(f"the model's own output {spec.name!r} of graph {graph.name!r} is NaN or infinite "
                                  f"at {case.name} (in the reference, before any export)",
                                  "check the model's weights and inputs: a NaN or Inf weight?")  # fmt: skip
            stats = compare(spec.name, a, b, tol, valid)
            if step:
                stats.note = stats.note or f"worst of {case.steps + 1} calls"
            old = worst.get(spec.name)
            worst[spec.name] = stats if old is None else _worse(old, stats)
        if step < case.steps:
            ref_feeds, cand_feeds = (_next_step(graph, f, out, rng) for f, out in ((ref_feeds, want), (cand_feeds, got)))
            tokens = {s.name: ref_feeds[s.name] for s in graph.inputs if "sequence" in s.shape}
            cand_feeds.update(tokens)  # both sides get the same new tokens
    outputs = [worst[s.name] for s in graph.outputs]
    if outputs and all(o.note.startswith("empty") for o in outputs):  # nothing was compared: not a pass
        for o in outputs:
            o.passed, o.note = False, "nothing to compare: every output is empty at this shape"
    return CaseResult(case, outputs)


def _worse(old: OutputStats, new: OutputStats) -> OutputStats:
    """Each figure's worst over two calls of a case (a decode step's stats against the earlier ones)."""
    if not old.passed or not new.passed:
        return old if not old.passed else new  # the first failure is reported with its own figures

    def least(x: float | None, y: float | None) -> float | None:
        return y if x is None else x if y is None else min(x, y)

    return OutputStats(new.name, max(old.max_abs, new.max_abs), max(old.max_rel, new.max_rel),
                       max(old.mean_abs, new.mean_abs), min(old.cosine, new.cosine), True, new.note or old.note,
                       least(old.row_cosine, new.row_cosine), least(old.token_cosine, new.token_cosine),
                       least(old.top1, new.top1))  # fmt: skip


def valid_positions(graph: GraphDef, feeds: Arrays, spec, array: np.ndarray) -> np.ndarray | None:
    """Where an output is meaningful: positions whose token is not padding, by the mask inputs.

    An output axis named like a mask's token axis (``sequence``, ``encoder_sequence``,
    ``past_sequence+sequence``) takes that mask; ``sequence`` also matches the last S
    columns of a ``past_sequence+sequence`` mask. None when no mask applies.
    """
    masks = {m.shape[1]: feeds[m.name] for m in graph.inputs if m.fill is Fill.MASK and len(m.shape) == 2}
    if not masks or array.ndim < 2:
        return None
    for axis, dim in enumerate(spec.shape[1:], start=1):
        mask = masks.get(dim)
        if mask is None and dim == "sequence":
            total = next((m for d, m in masks.items() if isinstance(d, str) and d.endswith("+sequence")), None)
            mask = None if total is None else total[:, total.shape[1] - array.shape[axis] :]
        if mask is not None and mask.shape == (array.shape[0], array.shape[axis]):
            shape = [array.shape[0]] + [1] * (array.ndim - 1)
            shape[axis] = array.shape[axis]
            return np.broadcast_to(mask.reshape(shape).astype(bool), array.shape)
    return None


def _next_step(graph: GraphDef, feeds: Arrays, outputs: Arrays, rng: np.random.Generator) -> Arrays:
    """Inputs of the next decode step: one new token per row, the mask one longer, present -> past."""
    sizes = {"sequence": 1, "batch": next(iter(feeds.values())).shape[0]}
    new = dict(feeds)
    for spec in graph.inputs:
        if "sequence" in spec.shape:
            new[spec.name] = sample_inputs([spec], {**sizes, **_sizes_of(spec, feeds)}, rng)[spec.name]
        elif any(isinstance(d, str) and d.endswith("+sequence") for d in spec.shape):
            mask = feeds[spec.name]
            new[spec.name] = np.concatenate([mask, np.ones((mask.shape[0], 1), mask.dtype)], axis=1)
    for pair in graph.cache:
        new[pair.past] = outputs[pair.present]
    return new


def _sizes_of(spec, feeds: Arrays) -> dict[str, int]:
    """Sizes of the named dims of ``spec`` other than ``sequence``, read from the current feeds."""
    array = feeds[spec.name]
    return {d: n for d, n in zip(spec.shape, array.shape) if isinstance(d, str) and d != "sequence"}


def validate(
    graphs: list[GraphDef],
    candidates: Mapping[str, Runner],
    cases: list[Case],
    precision: Precision = Precision.FP32,
    tolerance: Tolerance | None = None,
    references: Mapping[str, Runner] | None = None,
) -> ValidationResult:
    """Run every case; the result says per case and output how far the candidate is from the reference
    (PyTorch, unless other ``references`` are given, e.g. the portable ONNX model)."""
    tol = tolerance or TOLERANCES[precision]
    by_name = {g.name: g for g in graphs}
    result = ValidationResult(tol, precision)
    for case in cases:
        graph = by_name[case.graph]
        log.info("validating %s: %s", graph.name, case.name)
        reference = references[graph.name] if references else torch_runner(graph)
        result.cases.append(run_case(graph, case, reference, candidates[graph.name], tol))
    return result


def default_cases(graph: GraphDef, longest_window: int = 0, max_length: int | None = None) -> list[Case]:
    """Shapes other than the traced ones: short sequences, sequences longer than every window
    (long enough that lowered kernels take their blocked paths: 4W + 259 > 2 x (128-row block
    + 2(W-1) band)), batches of 1 and of several padded rows, and for cached graphs a prefill
    from an empty cache followed by decode steps, plus calls onto a long existing cache.
    ``max_length`` caps cache lengths for models with a position limit (learned positions)."""
    trace = graph.sizes()
    long = 4 * longest_window + 259 if longest_window else 2 * max(trace.values(), default=4) + 3
    moderate = 2 * longest_window + 3 if longest_window else long
    if max_length:
        long, moderate = min(long, max_length - 8), min(moderate, max_length - 8)

    def case(padded: bool = False, steps: int = 0, **sizes: int) -> Case:
        full = {d: sizes.get(d, trace[d]) for d in graph.dims()}
        return Case(graph.name, full, padded, steps)

    known = {"batch", "sequence", "past_sequence", "encoder_sequence"}
    if not set(graph.dims()) <= known:  # a foreign model: scale every dim
        return [
            case(**{d: n + 3 for d, n in trace.items()}),
            case(**{d: 2 * n + 1 for d, n in trace.items()}),
        ]
    if graph.cache:
        return [
            case(steps=4, batch=1, sequence=long, past_sequence=0, encoder_sequence=moderate),
            case(padded=True, steps=3, batch=3, sequence=moderate, past_sequence=0, encoder_sequence=moderate),
            case(batch=1, sequence=5, past_sequence=long, encoder_sequence=5),
            case(batch=2, sequence=1, past_sequence=moderate + 1, encoder_sequence=11),
        ]
    return [
        case(batch=1, sequence=long, encoder_sequence=long),
        case(padded=True, batch=3, sequence=5, encoder_sequence=5),
        case(padded=True, batch=2, sequence=moderate + 6, encoder_sequence=moderate + 6),
    ]
