"""Generate tokens with an exported decoder or encoder-decoder (torch-free).

    from fastattn.runtime import load, Sampling
    model = load("out/", provider="cpu")
    result = model.generate([[5, 6, 7], [8, 9]], max_new_tokens=64)              # greedy
    result = model.generate(ids, 64, Sampling(temperature=0.8, top_p=0.9, seed=0))
    result.tokens                                                                  # one list per prompt

What it does, step by step:

* prompts of different lengths are left-padded (mask 0 on padding) for decoders; the
  graph computes positions from the mask, so a padded row gets the tokens it gets alone.
  Encoder prompts are right-padded (encoder positions count from the first token);
* the first step runs the whole prompt (empty cache); later steps run one token per row;
* the KV cache never passes through NumPy: outputs are bound to CPU with ORT's IOBinding
  and the ``present_*`` OrtValues are bound as the next step's ``past_*`` inputs;
* encoder-decoders encode once; the cross keys/values stay bound for every decode step;
* exports made with ``--kv-buffer`` (unguarded GroupQueryAttention) get one buffer of
  prompt + max_new_tokens positions per cache, bound as both past and present: each step
  writes its keys in place, nothing is copied or allocated (ORT's shared past/present
  buffer); prompts of different lengths are right-padded there (GQA's convention);
* windowed layers return only the cache positions later tokens can see (their present
  is capped, ``min(past_sequence+sequence,K)``), so their cache stops growing; the mask
  keeps one column per token (8 bytes a token a row) since positions come from it;
* a row that emits a stop token (not included in its output) or reaches ``max_new_tokens``
  is finished: it keeps being fed ``pad_id`` while others run, but its output stops growing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from fastattn.errors import InputError, RunError
from fastattn.runtime.manifest import Arch, GraphEntry, TensorSpec
from fastattn.runtime.ort_errors import ORT_ERRORS, run_error

if TYPE_CHECKING:
    from fastattn.runtime.session import ExportedModel

logger = logging.getLogger(__name__)

_ITEMSIZE = {"tensor(float)": 4, "tensor(float16)": 2, "tensor(bfloat16)": 2}

StepCallback = Callable[[int, list[int | None]], None]
"""Called after each step with its index and the new token of each row (None: the row is finished)."""


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy (temperature 0) or sampled from the softmax."""

    temperature: float = 0.0  # 0: greedy (argmax)
    top_k: int = 0  # keep the k most likely tokens (0: all)
    top_p: float = 1.0  # keep the smallest set whose probability reaches p (1: all)
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):  # NaN compares false both ways
            raise InputError(f"temperature must be a number >= 0, got {self.temperature}", "pass 0 (greedy) or more")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise InputError(f"top_k must be an integer, got {self.top_k!r}", "pass 0 (all tokens) or a count")
        if self.top_k < 0:
            raise InputError(f"top_k must be >= 0, got {self.top_k}", "pass 0 (all tokens) or a positive count")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}", "pass a probability such as 0.9")
        if self.greedy and (self.top_k or self.top_p < 1):
            raise InputError("top_k and top_p sample, but temperature 0 is greedy", "pass a temperature > 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Generation:
    """The new tokens of each prompt and how the run went."""

    tokens: list[list[int]]  # new tokens per prompt, stop tokens excluded
    finish: list[str]  # per prompt: "stop" (a stop token) or "length" (max_new_tokens)
    prefill_seconds: float = 0.0  # encoder (if any) and the first decoder step
    decode_seconds: float = 0.0  # every later step
    steps: int = 0  # decoder runs, the prefill included
    cache_bytes: int = 0  # the KV cache at the end (self-attention; cross keys/values not included)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens (all rows) per second of the whole run."""
        total = self.prefill_seconds + self.decode_seconds
        return sum(len(t) for t in self.tokens) / total if total else 0.0


def generate(
    model: ExportedModel,
    prompt_ids: Sequence[int] | Sequence[Sequence[int]] | np.ndarray,
    max_new_tokens: int = 32,
    sampling: Sampling = Sampling(),
    stop_ids: Sequence[int] | None = None,
    on_step: StepCallback | None = None,
    pad_id: int | None = None,
    decoder_start: int | None = None,
) -> Generation:
    """Generate up to ``max_new_tokens`` tokens after each prompt (one prompt or a list of them).

    For encoder-decoders the prompts are the encoder input and the decoder starts from
    ``decoder_start``. Defaults come from the manifest of a Hugging Face model (``hf``: its EOS
    ids stop a row, its pad id pads, its decoder_start_token_id starts the decoder); otherwise
    nothing stops a row but ``max_new_tokens``, rows are padded with 0, and the decoder starts
    from each prompt's last token (the convention of ``fastattn train seq2seq``).
    """
    hf = model.manifest.hf
    if stop_ids is None:
        stop_ids = hf.eos_token_ids if hf is not None else ()
    if pad_id is None:
        pad_id = hf.pad_token_id if hf is not None and hf.pad_token_id is not None else 0
    if decoder_start is None and hf is not None:
        decoder_start = hf.decoder_start_token_id
    arch = model.manifest.arch
    if not arch.generates:
        raise InputError(f"this export is {'a foreign module' if arch is Arch.MODULE else 'an ' + arch}, it cannot generate",
                         "export a decoder or an encoder-decoder")  # fmt: skip
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}", "pass 1 or more")
    prompts = _prompts(prompt_ids)
    dec_entry = model.manifest.graph("model" if arch is Arch.DECODER else "decoder")
    vocab = _vocab(dec_entry)
    for value, what in [(pad_id, "pad_id"), *((s, "stop id") for s in stop_ids), (decoder_start, "decoder_start")]:
        if value is not None and not 0 <= value < vocab:
            raise InputError(f"{what} {value} is outside the vocabulary [0, {vocab})", "pass a valid token id")
    for row, prompt in enumerate(prompts):
        if any(not 0 <= t < vocab for t in prompt):
            raise InputError(f"prompt {row} has token ids outside the vocabulary [0, {vocab})",
                             "pass ids of this model's vocabulary")  # fmt: skip
    buffer = model.manifest.kv_buffer
    if buffer is not None:
        _check_buffer(prompts, max_new_tokens, buffer.max_length)
    _check_length(model, prompts, max_new_tokens, arch)
    run = _Run(model, dec_entry, sampling, set(stop_ids), pad_id, max_new_tokens, on_step)
    start = time.perf_counter()
    if arch is Arch.DECODER:
        # the shared buffer follows GQA's convention: rows right-padded, each row's new tokens
        # written at its own length (seqlens from the mask); the prompt's logits are read per row
        ids, mask = _pad(prompts, pad_id, left=buffer is None)
        if buffer is not None:
            run.bind_buffers(len(prompts), ids.shape[1] + max_new_tokens, [len(p) - 1 for p in prompts])
        else:
            run.bind_empty_cache(len(prompts))
    else:
        enc_ids, enc_mask = _pad(prompts, pad_id, left=False)
        run.encode(enc_ids, enc_mask)
        first = [p[-1] if decoder_start is None else decoder_start for p in prompts]
        ids, mask = np.array(first, np.int64)[:, None], np.ones((len(prompts), 1), np.int64)
        run.bind_empty_cache(len(prompts))
    return run.loop(ids, mask, start)


class _Run:
    """One generation: the decoder session, its IOBinding and the rows' state."""

    def __init__(self, model, entry: GraphEntry, sampling: Sampling, stop: set[int], pad_id: int,
                 max_new: int, on_step: StepCallback | None):  # fmt: skip
        self.model = model
        self.entry = entry
        self.session: ort.InferenceSession = model.graph(entry.name).session
        self.binding = self.session.io_binding()
        self.c_binding = self.binding._iobinding  # see step()
        self.cpu = ort.OrtDevice.make("cpu", 0)._get_c_device()
        self.sampling = sampling
        self.rng = np.random.default_rng(sampling.seed)
        self.stop, self.pad_id, self.max_new, self.on_step = stop, pad_id, max_new, on_step
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.cache = {p.present: p.past for p in entry.cache}
        self.presents: list = []  # the last step's present OrtValues (C objects), or the shared buffers
        self.shared = False  # past and present are one buffer per cache (see bind_buffers)
        self.prompt_last: np.ndarray | None = None
        self.vocab = _vocab(entry)
        self.logits: np.ndarray | None = None  # the decode steps' logits buffer (batch, 1, vocab)
        self.alive: dict[str, object] = {}  # arrays (and OrtValues) bound as inputs: ORT reads them at run time

    def bind(self, name: str, array: np.ndarray) -> None:
        self.alive[name] = array
        self.binding.bind_cpu_input(name, array)

    def bind_empty_cache(self, batch: int) -> None:
        for pair in self.entry.cache:
            spec = next(s for s in self.entry.inputs if s.name == pair.past)
            empty = np.zeros(spec.concrete_shape({"batch": batch, "past_sequence": 0}), spec.dtype)
            self.bind(pair.past, empty)

    def bind_buffers(self, batch: int, length: int, last: list[int]) -> None:
        """The --kv-buffer path: one zeroed buffer of ``length`` positions per cache, bound as both
        its past and its present, so GroupQueryAttention writes each step's keys in place
        (ORT's shared past/present buffer); the logits output is bound first, and again each step.
        ``last``: each right-padded prompt's last position, where its first logits are."""
        self.shared = True
        self.prompt_last = np.array(last)
        self.c_binding.bind_output("logits", self.cpu)
        specs = {s.name: s for s in self.entry.inputs}
        for pair in self.entry.cache:
            spec = specs[pair.past]
            heads, size = int(spec.shape[1]), int(spec.shape[3])  # fixed dims of a cache: kv heads, head size
            array = np.zeros((batch, heads, length, size), spec.dtype)
            value = ort.OrtValue.ortvalue_from_numpy(array)
            self.alive[pair.past] = (array, value)
            self.c_binding.bind_ortvalue_input(pair.past, value._ortvalue)
            self.c_binding.bind_ortvalue_output(pair.present, value._ortvalue)
            self.presents.append(value._ortvalue)

    def encode(self, ids: np.ndarray, mask: np.ndarray) -> None:
        """Run the encoder once and bind its cross keys/values (and mask) to the decoder for every step."""
        session = self.model.graph("encoder").session
        binding = session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        names = [o.name for o in session.get_outputs()]
        for name in names:
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        decoder_inputs = {s.name for s in self.entry.inputs}
        for name, value in zip(names, binding.get_outputs(), strict=True):
            if name in decoder_inputs:
                self.binding.bind_ortvalue_input(name, value)
        self.bind("encoder_attention_mask", mask)

    def step(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One decoder run; the presents become the next pasts; the last position's logits (batch, vocab).

        Single-token steps write their logits into one buffer, reused every step; ORT
        allocates the presents (their length changes), which are bound as the next pasts.
        The loop talks to the binding's C object (``_iobinding``): the Python wrapper's
        checks and per-call device lookups took 0.076 ms of each 0.61 ms int4 step of a
        6x512 decoder; onnxruntime is pinned, and the tests drive this path.
        """
        binding = self.c_binding
        for name, array in (("input_ids", ids), ("attention_mask", mask)):
            self.alive[name] = array
            binding.bind_input(name, array)
        decode = ids.shape[1] == 1
        if decode and (self.logits is None or self.logits.shape[0] != ids.shape[0]):
            self.logits = np.empty((ids.shape[0], 1, self.vocab), np.float32)
            self.logits_target = (np.float32, list(self.logits.shape), self.logits.ctypes.data)
        if self.shared:  # the presents stay bound to their buffers; only the logits are bound anew
            if decode:
                binding.bind_output("logits", self.cpu, *self.logits_target)
            else:
                binding.bind_output("logits", self.cpu)
            self.session._sess.run_with_iobinding(binding, None)
            if decode:
                assert self.logits is not None
                return self.logits[:, -1, :]
            return binding.get_outputs()[0].numpy()[np.arange(ids.shape[0]), self.prompt_last, :]
        binding.clear_binding_outputs()
        for name in self.outputs:
            if name == "logits" and decode:
                binding.bind_output(name, self.cpu, *self.logits_target)
            else:
                binding.bind_output(name, self.cpu)
        self.session._sess.run_with_iobinding(binding, None)
        values = binding.get_outputs()
        logits: np.ndarray | None = None
        self.presents = []
        for i, name in enumerate(self.outputs):
            if name == "logits":
                logits = self.logits[:, -1, :] if decode and self.logits is not None else values[i].numpy()[:, -1, :]
            elif name in self.cache:
                binding.bind_ortvalue_input(self.cache[name], values[i])
                self.presents.append(values[i])
        assert logits is not None, "the graph has a logits output (checked against the manifest)"
        return logits

    def cache_bytes(self) -> int:
        """Bytes of the cache the last step returned."""
        return sum(int(np.prod(v.shape())) * _ITEMSIZE[v.data_type()] for v in self.presents)

    def loop(self, ids: np.ndarray, mask: np.ndarray, start: float) -> Generation:
        batch = ids.shape[0]
        tokens: list[list[int]] = [[] for _ in range(batch)]
        finish = ["length"] * batch
        done = np.zeros(batch, bool)
        steps = 0
        prefill_end = start
        for step in range(self.max_new):
            try:
                logits = self.step(ids, mask)
            except MemoryError as e:
                raise RunError(f"generation ran out of memory at step {step} ({batch} rows)",
                               "generate fewer rows or tokens at once") from e  # fmt: skip
            except ORT_ERRORS as e:
                raise run_error(self.entry.name, e, {"input_ids": ids, "attention_mask": mask}) from e
            steps += 1
            if step == 0:
                prefill_end = time.perf_counter()
            chosen = choose(logits, self.sampling, self.rng)
            new: list[int | None] = []
            for row, token in enumerate(chosen.tolist()):
                if done[row]:
                    new.append(None)
                elif token in self.stop:
                    done[row], finish[row] = True, "stop"
                    new.append(None)
                else:
                    tokens[row].append(token)
                    new.append(token)
            if self.on_step is not None:
                self.on_step(step, new)
            if done.all() or step == self.max_new - 1:
                break
            ids = np.where(done, self.pad_id, chosen).astype(np.int64)[:, None]
            mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
        end = time.perf_counter()
        return Generation(tokens, finish, prefill_end - start, end - prefill_end, steps, self.cache_bytes())


def choose(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> np.ndarray:
    """The next token of each row from its logits (batch, vocab)."""
    if sampling.greedy:
        return logits.argmax(-1)
    scores = logits.astype(np.float64) / sampling.temperature
    vocab = scores.shape[-1]
    if sampling.top_k and sampling.top_k < vocab:
        kth = np.partition(scores, vocab - sampling.top_k, axis=-1)[:, vocab - sampling.top_k, None]
        scores = np.where(scores >= kth, scores, -np.inf)
    order = np.argsort(-scores, axis=-1, kind="stable")
    ranked = np.take_along_axis(scores, order, -1)
    probs = np.exp(ranked - ranked[:, :1])
    probs /= probs.sum(-1, keepdims=True)
    if sampling.top_p < 1:
        before = np.cumsum(probs, -1) - probs  # probability of the tokens ranked above
        probs = np.where(before < sampling.top_p, probs, 0.0)
        probs /= probs.sum(-1, keepdims=True)
    cdf = np.cumsum(probs, -1)
    u = rng.random((scores.shape[0], 1)) * cdf[:, -1:]
    index = np.minimum((cdf <= u).sum(-1), vocab - 1)
    return order[np.arange(scores.shape[0]), index]


def _prompts(prompt_ids) -> list[list[int]]:
    """One prompt (a sequence of ids) or several, as lists of Python ints."""
    arr = prompt_ids if isinstance(prompt_ids, np.ndarray) else None
    if arr is not None:
        rows = [arr.tolist()] if arr.ndim == 1 else arr.tolist() if arr.ndim == 2 else None
    else:
        items = list(prompt_ids)
        rows = [items] if items and all(_is_int(t) for t in items) else [list(p) for p in items]
    if rows is None or not rows or any(not r or not all(_is_int(t) for t in r) for r in rows):
        raise InputError("prompt_ids must be a non-empty list of token ids, or a list of such lists",
                         "pass e.g. [1, 2, 3] or [[1, 2, 3], [4, 5]]")  # fmt: skip
    return [[int(t) for t in r] for r in rows]


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _pad(prompts: list[list[int]], pad_id: int, left: bool) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) of the prompts padded to one length, on the left or the right."""
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_id, np.int64)
    mask = np.zeros((len(prompts), width), np.int64)
    for row, prompt in enumerate(prompts):
        cols = slice(width - len(prompt), width) if left else slice(0, len(prompt))
        ids[row, cols], mask[row, cols] = prompt, 1
    return ids, mask


def _vocab(entry: GraphEntry) -> int:
    logits: TensorSpec = next(s for s in entry.outputs if s.name == "logits")
    return int(logits.shape[-1])


def _check_buffer(prompts: list[list[int]], max_new: int, max_length: int) -> None:
    """The --kv-buffer path holds at most ``max_length`` tokens per row (its rotary tables)."""
    longest = max(len(p) for p in prompts)
    if longest + max_new > max_length:
        raise InputError(
            f"prompt of {longest} tokens + {max_new} new tokens is longer than this export's {max_length} positions",
            f"pass at most {max(max_length - longest, 0)} new tokens, or export with a larger max_positions",
        )


def _check_length(model, prompts: list[list[int]], max_new: int, arch: Arch) -> None:
    """A model with a position limit (a learned position table) cannot go past it: one clear error first."""
    limit = model.manifest.max_length
    if limit is None:
        return
    longest = max(len(p) for p in prompts)
    if arch is Arch.DECODER and longest + max_new > limit:
        raise InputError(
            f"prompt of {longest} tokens + {max_new} new tokens is longer than the model's {limit} positions",
            f"pass at most {max(limit - longest, 0)} new tokens or a shorter prompt",
        )
    if arch is Arch.ENCODER_DECODER and (longest > limit or 1 + max_new > limit):
        raise InputError(
            f"prompt of {longest} tokens or 1 + {max_new} decoder tokens is longer than the model's {limit} positions",
            f"keep the prompt and max_new_tokens under {limit}",
        )
