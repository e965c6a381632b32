"""Train a fastattn model on a task: AdamW, warmup then cosine or linear decay, on CPU.

Deterministic for a given seed (initialisation, batch order and, at a fixed thread count,
the arithmetic). Progress goes to an optional callback every ``log_every`` steps (and every ``log_seconds``); the
result carries the trained model, its held-out evaluation set and metrics, and the
throughput. Torch threads are set to the available cores for the run and restored after.

The fastattn attention op has no autograd formula of its own (export never needs one), so
training registers one: the backward pass recomputes the reference kernels with autograd
(as activation checkpointing does), which costs one extra attention forward per layer.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

import numpy as np
import torch

from fastattn.attention import op as attention_op
from fastattn.errors import InputError
from fastattn.models import build
from fastattn.models.config import ModelConfig, NormPosition
from fastattn.models.transformer import FastAttnModel
from fastattn.train import corpus as corpus_mod
from fastattn.train.tasks import Batch, Task, make
from fastattn.train.tokenizer import ByteTokenizer, Tokenizer

log = logging.getLogger(__name__)

# Bump when a change to the trainer, tasks or corpus would change what a run produces:
# it is part of every cache key.
TRAINER_VERSION = 1


class Schedule(str, Enum):
    COSINE = "cosine"
    LINEAR = "linear"


@dataclass(frozen=True)
class TrainOptions:
    steps: int = 300
    batch: int = 16
    seq: int | None = None  # None: the task's default (lm 256, classifier 128, seq2seq 128)
    seed: int = 0
    lr: float | None = None  # peak learning rate; None: 2e-3, or 3e-4 for post-LN models
    warmup: float | None = None  # fraction of the steps warming up linearly; None: 0.05, post-LN 0.1
    schedule: Schedule = Schedule.COSINE  # decay to min_lr_ratio * lr after warmup
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_samples: int | None = None  # None: the task's default
    bf16: bool | None = None  # autocast matmuls to bfloat16; None: where the CPU has native bf16
    log_every: int = 50
    log_seconds: float = 5.0  # ... and at least this often (a large model's 50 steps take minutes)
    threads: int | None = None  # None: every core this process may use

    def __post_init__(self) -> None:
        for name in ("steps", "batch"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise InputError(f"the learning rate must be positive, not {self.lr}")

    def resolved(self, config: ModelConfig) -> TrainOptions:
        """These options with the defaults decided for ``config`` and this machine.

        Post-LN stacks get a lower peak rate and a longer warmup: a 6-layer d=384 post-LN
        encoder stayed at chance for 300 steps at 1e-3 (5% warmup) and reached 37% of 8
        classes at 3e-4 (10% warmup); pre-LN models train well at 2e-3.
        """
        post = config.norm_position is NormPosition.POST
        return replace(
            self,
            lr=self.lr if self.lr is not None else (3e-4 if post else 2e-3),
            warmup=self.warmup if self.warmup is not None else (0.1 if post else 0.05),
            bf16=self.bf16 if self.bf16 is not None else native_bf16(),
        )

    def key(self, config: ModelConfig) -> dict:
        """What determines the trained weights of ``config`` (for cache keys): all but logging and threads."""
        d = asdict(self.resolved(config))
        for name in ("log_every", "log_seconds", "threads"):
            d.pop(name)
        d["schedule"] = self.schedule.value
        return d

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step`` (on resolved options)."""
        warmup = max(1, round(self.warmup * self.steps))
        if step < warmup:
            return self.lr * (step + 1) / warmup
        done = min(1.0, (step - warmup) / max(1, self.steps - 1 - warmup))  # 1 at the last step
        decay = 0.5 * (1 + math.cos(math.pi * done)) if self.schedule is Schedule.COSINE else 1 - done
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * decay)


@dataclass
class Progress:
    step: int  # steps done
    steps: int
    loss: float  # mean training loss since the previous report
    lr: float
    tokens_per_second: float
    elapsed: float


@dataclass
class TrainResult:
    model: FastAttnModel  # in eval mode
    task: str
    tokenizer: Tokenizer
    eval_data: Batch
    metrics: dict[str, float]  # held-out, after training
    initial_metrics: dict[str, float]  # held-out, of the untrained model
    seconds: float  # training steps only
    tokens: int
    losses: list[float] = field(repr=False, default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): then it is ~4x fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def prepare(task: str, config: ModelConfig, options: TrainOptions, tokenizer: Tokenizer | None = None) -> Task:
    """The task ``train`` would run; raises :class:`InputError` if ``config`` cannot learn it."""
    return make(task, config, corpus_mod.load(), tokenizer or ByteTokenizer(), options.seq)


def train(
    task: str,
    config: ModelConfig,
    options: TrainOptions = TrainOptions(),
    progress: Callable[[Progress], None] | None = None,
    tokenizer: Tokenizer | None = None,
) -> TrainResult:
    """Train a freshly initialised ``config`` model on ``task`` (``lm``, ``classifier``, ``seq2seq``)."""
    tokenizer = tokenizer or ByteTokenizer()
    options = options.resolved(config)
    job = prepare(task, config, options, tokenizer)
    eval_data = job.eval_set(options.eval_samples)
    register_attention_autograd()
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads or available_cores())
    try:
        with torch.random.fork_rng():
            model = build(config, seed=options.seed)
            torch.manual_seed(options.seed)  # the process's generator is seeded at random
            _initialise(model)
            initial = job.metrics(model, eval_data)
            start = time.perf_counter()
            tokens, losses = _loop(job, model, options, progress)
            seconds = time.perf_counter() - start
            model.eval()
            metrics = job.metrics(model, eval_data)
    finally:
        torch.set_num_threads(threads)
    log.info("trained %s %s in %.1f s (%.0f tokens/s): %s", task, config.name, seconds, tokens / seconds, metrics)
    return TrainResult(model, task, tokenizer, eval_data, metrics, initial, seconds, tokens, losses)


@torch.no_grad()
def _initialise(model: FastAttnModel) -> FastAttnModel:
    """GPT-2 style: embeddings N(0, 0.02), so tied output logits start small (loss near ln vocab)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            module.weight.normal_(0.0, 0.02)
    return model


def _loop(job, model: FastAttnModel, options: TrainOptions, progress) -> tuple[int, list[float]]:
    rng = np.random.default_rng(options.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": options.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=options.lr, betas=(0.9, 0.95),
    )  # fmt: skip
    model.train()
    tokens, losses, window = 0, [], []
    start = last = time.perf_counter()
    last_tokens = 0
    for step in range(options.steps):
        lr = options.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = job.batch(rng, options.batch)
        with torch.autocast("cpu", torch.bfloat16, enabled=options.bf16):
            loss = job.loss(model, batch, masked=False)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if options.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
        optimizer.step()
        tokens += job.tokens(batch)
        losses.append(loss.item())
        window.append(losses[-1])
        done = step + 1
        now = time.perf_counter()
        if progress and (done % options.log_every == 0 or done == options.steps or now - last >= options.log_seconds):
            rate = (tokens - last_tokens) / max(now - last, 1e-9)
            progress(Progress(done, options.steps, sum(window) / len(window), lr, rate, now - start))
            window, last, last_tokens = [], now, tokens
    return tokens, losses


# --- autograd for the fastattn attention op ------------------------------------------------------


def register_attention_autograd() -> None:
    """Give ``torch.ops.fastattn.attention`` a backward pass (once per process, unless it has one)."""
    op = attention_op._attention_op
    if getattr(op, "_backward_fn", None) is not None:
        return
    op.register_autograd(_attention_backward, setup_context=_attention_setup)


def _attention_setup(ctx, inputs, output) -> None:
    query, key, value, past_key, past_value, key_mask, *params = inputs
    ctx.save_for_backward(query, key, value, past_key, past_value, key_mask)
    ctx.params = params


def _attention_backward(ctx, grad_out, grad_present_key, grad_present_value):
    """Recompute in float32 without autocast (faster than bfloat16 attention on CPU), then cast back."""
    query, key, value, past_key, past_value, key_mask = ctx.saved_tensors
    inputs = (query, key, value, past_key, past_value)
    with torch.enable_grad(), torch.autocast(query.device.type, enabled=False):
        leaves = [None if t is None else _at_least_float32(t).requires_grad_() for t in inputs]
        outputs = attention_op.eager(*leaves, key_mask, *ctx.params)
        wrt = [t for t in leaves if t is not None]
        grads = iter(torch.autograd.grad(
            outputs, wrt, [_at_least_float32(g) for g in (grad_out, grad_present_key, grad_present_value)],
            allow_unused=True,
        ))  # fmt: skip
    result = [None if t is None else _cast(next(grads), t) for t in inputs]
    return (*result, None, *(None for _ in ctx.params))  # key_mask and the attributes


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.promote_types(t.dtype, torch.float32))


def _cast(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if grad is None else grad.to(like.dtype)
