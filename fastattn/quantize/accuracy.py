"""Task-level accuracy of a model on an evaluation set: what quantization is gated on.

An evaluation set holds the inputs of one model call per sample and, when the model was
trained by fastattn (or the user gives them), the labels:

    decoder          input_ids (N, S), attention_mask (N, S), labels (N, S)
    encoder          input_ids (N, S), attention_mask (N, S)[, labels (N,)]
    encoder-decoder  encoder_input_ids, encoder_attention_mask (N, Se),
                     decoder_input_ids, decoder_attention_mask (N, Sd), labels (N, Sd)

Labels of -100 are ignored. Several models (PyTorch, the float ONNX model, a quantized one)
run on the same batches side by side, so logits are never held for the whole set: per
batch each model adds to its negative log-likelihood, correct count, top-1 agreement and
cosine against the reference model.

Figures: perplexity (exp of mean NLL over labelled tokens) for language models and
encoder-decoders, accuracy for classifiers, and for every model top-1 agreement and
cosine of the main output (logits, or hidden states) with the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from fastattn.errors import InputError
from fastattn.runtime import dims
from fastattn.runtime.manifest import Arch, GraphEntry, Manifest
from fastattn.runtime.records import Figures
from fastattn.runtime.samples import sample_inputs

Arrays = dict[str, np.ndarray]
Runner = Callable[[Mapping[str, np.ndarray]], Arrays]
IGNORE = -100
EVAL_FILE = "eval.npz"  # held-out data kept with an export, so `fastattn quantize` can gate later


class Task(str, Enum):
    LM = "lm"  # next-token logits: perplexity
    CLASSIFIER = "classifier"  # one logit row per sample: accuracy
    EMBEDDING = "embedding"  # hidden states only: cosine
    # Hugging Face feature extraction: each sample's masked-mean-pooled hidden state, cosine per sample
    # with the reference's (``cosine`` the mean, ``cosine_min`` the least)
    SENTENCE_EMBEDDING = "sentence_embedding"


@dataclass
class EvalSet:
    arrays: Arrays
    source: str  # where the data came from, for the report
    labelled: bool = field(init=False)

    def __post_init__(self) -> None:
        self.labelled = "labels" in self.arrays

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def split(self) -> tuple[EvalSet, EvalSet]:
        """Two disjoint halves (calibration, evaluation) when there is no separate calibration data."""
        if len(self) < 2:
            return self, EvalSet(self.arrays, f"{self.source} (also used for calibration: only one sample)")
        half = len(self) // 2
        first = EvalSet({k: v[:half] for k, v in self.arrays.items()}, f"first {half} of {self.source}")
        rest = EvalSet({k: v[half:] for k, v in self.arrays.items()}, f"last {len(self) - half} of {self.source}")
        return first, rest

    def batches(self, size: int) -> Iterator[Arrays]:
        for start in range(0, len(self), size):
            yield {k: v[start : start + size] for k, v in self.arrays.items()}


def load_npz(path: Path, what: str = "evaluation") -> EvalSet:
    """An evaluation (or calibration) set from ``.npz`` arrays named as in the module docstring."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array (.npy), not named arrays (.npz)")
        with loaded as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:  # numpy reports damaged or foreign files with many types (BadZipFile, EOFError, ...)
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
        raise InputError(f"cannot read {what} data {path}: {detail}",
                         "give an .npz written by numpy.savez with input_ids, attention_mask (and labels)") from e  # fmt: skip
    if not arrays:
        raise InputError(f"{what} data {path} holds no arrays", "save input_ids, attention_mask (and labels)")
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf" or array.ndim < 1 or len(array) == 0:
            raise InputError(f"{what} data {path}: array {name!r} is {array.dtype} of shape {array.shape}",
                             "save non-empty numeric arrays, one row per sample")  # fmt: skip
    return EvalSet(arrays, str(path))


def save_npz(data: EvalSet, path: Path) -> None:
    np.savez(path, **data.arrays)


def task_of(manifest: Manifest) -> Task:
    names = {o.name for g in manifest.graphs for o in g.outputs}
    hf_task = manifest.hf.task if manifest.hf is not None else None
    if manifest.arch.generates or hf_task == "text-generation":
        return Task.LM
    if hf_task == "feature-extraction":
        return Task.SENTENCE_EMBEDDING
    return Task.CLASSIFIER if "logits" in names else Task.EMBEDDING


def expected_arrays(manifest: Manifest) -> list[str]:
    if manifest.arch is Arch.ENCODER_DECODER:
        return ["encoder_input_ids", "encoder_attention_mask", "decoder_input_ids", "decoder_attention_mask"]
    return [s.name for s in manifest.graphs[0].inputs if not s.name.startswith("past_")]


def check_eval_set(manifest: Manifest, data: EvalSet, what: str = "evaluation") -> EvalSet:
    missing = [n for n in expected_arrays(manifest) if n not in data.arrays]
    if missing:
        raise InputError(
            f"{what} data from {data.source} lacks {', '.join(missing)}",
            f"give arrays named {', '.join(expected_arrays(manifest))} (and labels)",
        )
    lengths = {k: len(v) for k, v in data.arrays.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(f"{what} arrays from {data.source} differ in length: {lengths}", "give N samples each")
    return data


def random_eval_set(manifest: Manifest, samples: int = 8, sequence: int = 128, seed: int = 0) -> EvalSet:
    """Random token samples for a model without held-out data: next-token labels for language models
    (figures measure how far a model moves from the reference, not task accuracy). Rows are
    left-padded to lengths from the whole sequence down to 4 tokens, alternating long and short,
    so both halves (calibration, evaluation; :meth:`EvalSet.split`) see short inputs and padding:
    static int8 calibrated on full-length rows only missed a 5-token batch (cosine 0.988)."""
    rng = np.random.default_rng(seed)
    if manifest.max_length is not None:  # a position table: stay within it
        sequence = min(sequence, manifest.max_length)
    first = manifest.graphs[0]
    named = {d for g in manifest.graphs for s in g.inputs for d in s.dims() for d in dims.names(d)}
    sizes = {d: sequence for d in named} | {"batch": samples, "past_sequence": 0}  # any name a graph uses
    if manifest.arch is Arch.MODULE:  # a foreign graph names its own dims: the first input's first is the batch
        leading = first.inputs[0].shape[0] if first.inputs and first.inputs[0].shape else None
        if isinstance(leading, str):
            sizes[leading] = samples
    pad = _pad_to_lengths if manifest.kv_buffer is None else (lambda mask: None)  # --kv-buffer: unpadded rows
    if manifest.arch is Arch.ENCODER_DECODER:
        enc = sample_inputs(first.inputs, sizes, rng)
        pad(enc["attention_mask"])
        dec = sample_inputs(manifest.graph("decoder").inputs[:2], sizes, rng)
        arrays = {"encoder_input_ids": enc["input_ids"], "encoder_attention_mask": enc["attention_mask"],
                  "decoder_input_ids": dec["input_ids"], "decoder_attention_mask": dec["attention_mask"]}  # fmt: skip
        arrays["labels"] = _next_tokens(dec["input_ids"])
    else:
        arrays = {k: v for k, v in sample_inputs(first.inputs, sizes, rng).items() if not k.startswith("past_")}
        if "attention_mask" in arrays:
            pad(arrays["attention_mask"])
        if manifest.arch is Arch.DECODER:
            arrays["labels"] = _next_tokens(arrays["input_ids"])
            arrays["labels"][arrays["attention_mask"] == 0] = IGNORE
    return EvalSet(arrays, f"{samples} random samples of {sequence} tokens" + ("" if manifest.kv_buffer is None
                   else " (unpadded: --kv-buffer)"))  # fmt: skip


def _pad_to_lengths(mask: np.ndarray) -> None:
    """Left-pad row i of an all-ones mask to the i-th of: S, 4, S/2, 8, S/4, 16, ... tokens."""
    rows, length = mask.shape
    long = [max(length >> k, 1) for k in range(rows)]
    short = [min(4 << k, length) for k in range(rows)]
    for row in range(rows):
        keep = (long if row % 2 == 0 else short)[row // 2]
        mask[row, : length - keep] = 0


def _next_tokens(ids: np.ndarray) -> np.ndarray:
    labels = np.full_like(ids, IGNORE)
    labels[:, :-1] = ids[:, 1:]
    return labels


# --- running a model on one batch ---------------------------------------------------------------

Forward = Callable[[Arrays], tuple[np.ndarray, np.ndarray]]  # batch -> (main output, valid positions)


def graph_feeds(manifest: Manifest, batch: Arrays, runners: Mapping[str, Runner] | None = None) -> dict[str, Arrays]:
    """The feeds of each graph for one evaluation batch, caches empty. An encoder-decoder's decoder
    takes the encoder's cross keys/values, so its feeds need ``runners["encoder"]``."""
    if manifest.arch is not Arch.ENCODER_DECODER:
        entry = manifest.graphs[0]
        return {entry.name: {**_empty_cache(entry, len(batch[entry.inputs[0].name])), **_inputs(entry, batch)}}
    enc_mask = batch["encoder_attention_mask"]
    encoder = {"input_ids": batch["encoder_input_ids"], "attention_mask": enc_mask}
    feeds = {"encoder": encoder}
    if runners is not None:
        memory = runners["encoder"](encoder)
        feeds["decoder"] = {
            **_empty_cache(manifest.graph("decoder"), len(enc_mask)),
            **{k: v for k, v in memory.items() if k.startswith("cross_")},
            "input_ids": batch["decoder_input_ids"],
            "attention_mask": batch["decoder_attention_mask"],
            "encoder_attention_mask": enc_mask,
        }
    return feeds


def forward(manifest: Manifest, runners: Mapping[str, Runner]) -> Forward:
    """How to run one evaluation batch through a model's graphs: (main output, valid-position mask)."""
    last = manifest.graphs[-1]
    main = "logits" if any(o.name == "logits" for o in last.outputs) else last.outputs[0].name
    mask_name = "decoder_attention_mask" if manifest.arch is Arch.ENCODER_DECODER else "attention_mask"

    def call(batch: Arrays) -> tuple[np.ndarray, np.ndarray]:
        feeds = graph_feeds(manifest, batch, runners)
        out = runners[last.name](feeds[last.name])[main]
        if out.ndim == 2:  # one row per sample (classifier logits)
            return out, np.ones(out.shape[0], bool)
        mask = batch.get(mask_name)
        return out, (mask.astype(bool) if mask is not None else np.ones(out.shape[:2], bool))

    return call


def _inputs(entry: GraphEntry, batch: Arrays) -> Arrays:
    return {s.name: batch[s.name] for s in entry.inputs if s.name in batch}


def _empty_cache(entry: GraphEntry, batch: int) -> Arrays:
    pasts = [s for s in entry.inputs if s.name.startswith("past_")]
    return sample_inputs(pasts, {"batch": batch, "past_sequence": 0}, np.random.default_rng(0))


# --- figures ---------------------------------------------------------------------------------------


@dataclass
class _Tally:
    nll: float = 0.0
    tokens: int = 0
    correct: int = 0
    labelled: int = 0
    agree: int = 0
    compared: int = 0
    dot: float = 0.0
    norm_a: float = 0.0
    norm_b: float = 0.0
    sample_cosines: list[float] = field(default_factory=list)

    def figures(self, task: Task, is_reference: bool) -> Figures:
        cosine = self.dot / np.sqrt(self.norm_a * self.norm_b) if self.norm_a * self.norm_b > 0 else 1.0
        if task is Task.SENTENCE_EMBEDDING:
            found = self.sample_cosines or [1.0]
            return Figures(cosine=None if is_reference else float(np.mean(found)),
                           cosine_min=None if is_reference else float(np.min(found)))  # fmt: skip
        return Figures(
            perplexity=float(np.exp(self.nll / self.tokens)) if task is Task.LM and self.tokens else None,
            accuracy=self.correct / self.labelled if task is Task.CLASSIFIER and self.labelled else None,
            agreement=None if is_reference or task is Task.EMBEDDING else self.agree / max(self.compared, 1),
            cosine=None if is_reference else float(cosine),
        )


def evaluate(
    task: Task, forwards: Mapping[str, Forward], data: EvalSet, reference: str, batch_size: int = 4
) -> dict[str, Figures]:
    """Every model's figures on ``data``; agreement and cosine are against ``forwards[reference]``."""
    tallies = {name: _Tally() for name in forwards}
    for batch in data.batches(batch_size):
        outputs = {name: fwd(batch) for name, fwd in forwards.items()}
        if task is Task.SENTENCE_EMBEDDING:
            ref = _pooled(*outputs[reference])
            for name, (out, valid) in outputs.items():
                tallies[name].sample_cosines += _row_cosines(_pooled(out, valid), ref)
            continue
        ref, valid = outputs[reference]
        ref = ref[valid].astype(np.float64)
        for name, (out, _) in outputs.items():
            tally, got = tallies[name], out[valid].astype(np.float64)
            tally.dot += float(np.sum(got * ref))
            tally.norm_a += float(np.sum(got * got))
            tally.norm_b += float(np.sum(ref * ref))
            if task is Task.EMBEDDING:
                continue
            tally.agree += int(np.sum(got.argmax(-1) == ref.argmax(-1)))
            tally.compared += got.shape[0]
            if "labels" not in batch:
                continue
            labels = batch["labels"][valid] if task is Task.LM else batch["labels"]
            keep = labels != IGNORE
            if task is Task.LM:
                logits, target = got[keep], labels[keep]
                top = logits.max(-1, keepdims=True)
                logz = np.log(np.exp(logits - top).sum(-1)) + top[:, 0]
                tally.nll += float(np.sum(logz - logits[np.arange(len(target)), target]))
                tally.tokens += int(keep.sum())
            else:
                tally.correct += int(np.sum(got.argmax(-1)[keep] == labels[keep]))
                tally.labelled += int(keep.sum())
    return {name: t.figures(task, name == reference) for name, t in tallies.items()}


def _pooled(out: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N, S, D) hidden states -> (N, D) means over each sample's valid positions."""
    weights = valid.astype(np.float64)[..., None]
    return (out.astype(np.float64) * weights).sum(1) / np.maximum(weights.sum(1), 1.0)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> list[float]:
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return [float(x) for x in np.where(norms > 0, (a * b).sum(-1) / np.maximum(norms, 1e-300), 1.0)]
