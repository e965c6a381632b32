"""Optimum's own exports of a Hugging Face checkpoint as rows of ``fastattn bench`` (``--optimum CHECKPOINT_DIR``).

Three variants, made the way Optimum's users make them (optimum-onnx's Python API, nothing downloaded):

    fp32   optimum.exporters.onnx.main_export(checkpoint, task)           model.onnx
    o3     ORTOptimizer + AutoOptimizationConfig.O3() on the fp32 export   model_optimized.onnx
    int8   ORTQuantizer + AutoQuantizationConfig.avx512_vnni(is_static=False) (dynamic, per-channel
           u8/s8, every MatMul Optimum picks)                               model_quantized.onnx

Each is written once into ``$FASTATTN_CACHE/optimum/<key>/<variant>/`` (``~/.cache/fastattn`` when
unset; never the user's checkpoint directory), the key hashing the checkpoint's config and weight
files, the task and the versions of optimum-onnx, transformers, torch and onnxruntime; a variant
appears under its name only when complete (staging directory + rename, one writer per key).
A variant Optimum cannot make (ORTOptimizer has no O3 for some model types) is one failure line.

Rows are timed by :mod:`fastattn.bench.optimum_measure` on the inputs of the fastattn export of the
same checkpoint (the export whose ``config.json`` equals the checkpoint's), which must be among the
exports benched; feature extraction and text generation are supported. Accuracy (:func:`accuracy`)
is measured on the same held-out text the Hugging Face family gates on
(:func:`fastattn.families.hf.eval_text.text_eval_set`) against the transformers model itself: the
mean and least per-sample cosine of mean-pooled embeddings for encoders, perplexity and top-1
agreement for language models, for every row of that checkpoint (fastattn's exports included).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from pathlib import Path

import numpy as np

from fastattn.bench.records import AccuracyRecord
from fastattn.errors import InputError
from fastattn.runtime.manifest import Manifest

log = logging.getLogger(__name__)

CACHE_ENV = "FASTATTN_CACHE"
TASKS = {"feature-extraction": "feature-extraction", "text-generation": "text-generation-with-past"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")
ATTENTION_OPS = ("Attention", "MultiHeadAttention", "GroupQueryAttention", "QAttention")

try:
    import fcntl
except ImportError:  # not POSIX: the rename alone keeps entries whole (a race exports twice)
    fcntl = None  # type: ignore[assignment]


class Variant(StrEnum):
    FP32 = "fp32"
    O3 = "o3"
    INT8 = "int8"


FILES = {Variant.FP32: "model.onnx", Variant.O3: "model_optimized.onnx", Variant.INT8: "model_quantized.onnx"}
PRECISION = {Variant.FP32: "fp32", Variant.O3: "fp32", Variant.INT8: "int8"}
RECIPES = {
    Variant.FP32: "optimum.exporters.onnx.main_export(task={task})",
    Variant.O3: "ORTOptimizer.optimize(AutoOptimizationConfig.O3())",
    Variant.INT8: "ORTQuantizer.quantize(AutoQuantizationConfig.avx512_vnni(is_static=False)): {config}",
}


@dataclass(frozen=True)
class OptimumModel:
    """One of Optimum's exports of a checkpoint, paired with the fastattn export whose inputs it takes."""

    checkpoint: Path
    variant: Variant
    file: Path
    label: str  # how its rows are named: optimum-fp32, optimum-o3, optimum-int8
    export: Path  # the fastattn export of the same checkpoint
    recipe: str
    attention: str  # the attention ops in its graph, e.g. "com.microsoft Attention x6", or "decomposed"

    @property
    def precision(self) -> str:
        return PRECISION[self.variant]


def parse_variants(text: str) -> tuple[Variant, ...]:
    try:
        return tuple(dict.fromkeys(Variant(v.strip().lower()) for v in text.split(",") if v.strip()))
    except ValueError:
        raise InputError(f"bad Optimum variants {text!r}", f"pass some of {', '.join(v.value for v in Variant)}") from None


def cache_root() -> Path:
    base = os.environ.get(CACHE_ENV)
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "fastattn") / "optimum"


def read_config(directory: Path) -> dict | None:
    try:
        data = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pair(checkpoint: Path, exports: list[tuple[Path, Manifest]], any_task: bool = False) -> tuple[Path, Manifest]:
    """The first fastattn export of ``checkpoint`` (same config.json, a Hugging Face export) among ``exports``;
    unless ``any_task`` (PyTorch rows), one whose task Optimum's rows support."""
    config = read_config(checkpoint)
    if config is None or not config.get("model_type"):
        raise InputError(f"{checkpoint} is not a Hugging Face checkpoint directory (no readable config.json)",
                         "pass the directory the fastattn export was made from")  # fmt: skip
    for directory, manifest in exports:
        if manifest.hf is not None and read_config(directory) == config:
            if not any_task and manifest.hf.task not in TASKS:
                raise InputError(f"--optimum takes feature extraction and text generation, not {manifest.hf.task}",
                                 "bench encoder-decoders without --optimum")  # fmt: skip
            return directory, manifest
    raise InputError(f"no export given was made from {checkpoint}",
                     f"export it (fastattn-export {checkpoint} -o OUT) and pass OUT to fastattn bench too")  # fmt: skip


def _key(checkpoint: Path, task: str) -> str:
    digest = hashlib.sha256(task.encode())
    for package in ("optimum-onnx", "optimum", "transformers", "torch", "onnxruntime"):
        digest.update(f"{package}={metadata.version(package)};".encode())
    for path in sorted(p for p in checkpoint.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' and Optimum's warnings (legacy names, tracer warnings, weight deduplication) stay out of
    bench's output."""
    import transformers  # noqa: PLC0415
    from optimum.utils import logging as optimum_logging  # noqa: PLC0415

    levels = (transformers.logging.get_verbosity(), optimum_logging.get_verbosity())
    transformers.logging.set_verbosity_error()
    optimum_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(levels[0])
        optimum_logging.set_verbosity(levels[1])


def _make(variant: Variant, checkpoint: Path, task: str, fp32: Path, out: Path) -> str:
    """Write ``variant`` into ``out``; the recipe it followed."""
    if variant is Variant.FP32:
        from optimum.exporters.onnx import main_export  # noqa: PLC0415

        main_export(model_name_or_path=str(checkpoint), output=out, task=task, local_files_only=True,
                    do_validation=False)  # fmt: skip
        return RECIPES[variant].format(task=task)
    if variant is Variant.O3:
        from optimum.onnxruntime import ORTOptimizer  # noqa: PLC0415
        from optimum.onnxruntime.configuration import AutoOptimizationConfig  # noqa: PLC0415

        ORTOptimizer.from_pretrained(fp32).optimize(save_dir=out, optimization_config=AutoOptimizationConfig.O3())
        return RECIPES[variant]
    from optimum.onnxruntime import ORTQuantizer  # noqa: PLC0415
    from optimum.onnxruntime.configuration import AutoQuantizationConfig  # noqa: PLC0415

    config = AutoQuantizationConfig.avx512_vnni(is_static=False)
    ORTQuantizer.from_pretrained(fp32).quantize(save_dir=out, quantization_config=config)
    return RECIPES[variant].format(config=config)


def attention_ops(path: Path) -> str:
    import onnx  # noqa: PLC0415

    model = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in ATTENTION_OPS:
            name = f"{node.domain or 'ai.onnx'} {node.op_type}"
            counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name} x{n}" for name, n in counts.items()) or "decomposed"


def prepare(checkpoint: Path, export: tuple[Path, Manifest], variants: tuple[Variant, ...],
            step: Callable[[str], None]) -> tuple[list[OptimumModel], list[str]]:  # fmt: skip
    """Optimum's exports of ``checkpoint`` (made once, cached), and a line for each variant it could not make."""
    directory, manifest = export
    task = TASKS[manifest.hf.task]  # type: ignore[union-attr]  (pair() checked it)
    key = _key(checkpoint, task)
    root = cache_root() / key
    models, failures = [], []
    with _locked(root), _quiet():
        for variant in (Variant.FP32, *(v for v in variants if v is not Variant.FP32)):
            target = root / variant.value
            if not (target / "recipe.json").is_file():
                step(f"Optimum: exporting {checkpoint.name} ({variant.value}) into {root}")
                staging = Path(tempfile.mkdtemp(prefix=f".{variant.value}-", dir=root))
                try:
                    recipe = _make(variant, checkpoint, task, root / Variant.FP32.value, staging)
                    (staging / "recipe.json").write_text(json.dumps({"recipe": recipe, "checkpoint": str(checkpoint)}))
                    shutil.rmtree(target, ignore_errors=True)
                    os.replace(staging, target)
                except Exception as e:  # noqa: BLE001 - Optimum raises many kinds for what it cannot export
                    shutil.rmtree(staging, ignore_errors=True)
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    failures.append(f"optimum-{variant.value} of {checkpoint.name}: Optimum cannot make it: {first[:200]}")
                    if variant is Variant.FP32:
                        return [], failures
                    continue
            if variant in variants:
                recipe = json.loads((target / "recipe.json").read_text())["recipe"]
                file = target / FILES[variant]
                models.append(OptimumModel(checkpoint, variant, file, f"optimum-{variant.value}", directory, recipe,
                                           attention_ops(file)))  # fmt: skip
    return models, failures


# ---- accuracy -------------------------------------------------------------------------------------


def _torch_forward(checkpoint: Path, manifest: Manifest):
    """The transformers model itself (eager attention, fp32) behind fastattn's graph signature."""
    import torch  # noqa: PLC0415

    from fastattn.families.hf import architectures  # noqa: PLC0415
    from fastattn.families.hf.reference import load_reference, references  # noqa: PLC0415
    from fastattn.families.hf.spec import Task  # noqa: PLC0415
    from fastattn.quantize.accuracy import forward  # noqa: PLC0415

    task = Task(manifest.hf.task)  # type: ignore[union-attr]
    family = architectures.find(str(read_config(checkpoint).get("model_type")))  # type: ignore[union-attr]
    module = references(load_reference(checkpoint, task), family, task, False)["model"]
    entry = manifest.graphs[0]

    def run(feeds):
        with torch.inference_mode():
            out = module(*(torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in entry.inputs))
        return {entry.outputs[0].name: out[0].float().numpy()}

    return forward(manifest, {"model": run})


def _onnx_forward(path: Path, manifest: Manifest, threads: int | None):
    import onnxruntime as ort  # noqa: PLC0415

    from fastattn.bench.optimum_measure import optimum_feeds  # noqa: PLC0415
    from fastattn.quantize.accuracy import forward  # noqa: PLC0415

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    main = manifest.graphs[0].outputs[0].name

    def run(feeds):
        return {main: session.run([main], optimum_feeds(session.get_inputs(), feeds))[0]}

    return forward(manifest, {"model": run})


def accuracy(checkpoint: Path, exports: list[tuple[str, Path, Manifest]], models: list[OptimumModel],
             torch_label: str, threads: int | None = None) -> list[AccuracyRecord]:  # fmt: skip
    """Every model of ``checkpoint`` against the transformers model on the family's held-out text."""
    from fastattn.families.hf.eval_text import text_eval_set  # noqa: PLC0415
    from fastattn.families.hf.spec import Task as HfTask  # noqa: PLC0415
    from fastattn.quantize.accuracy import evaluate, forward, task_of  # noqa: PLC0415
    from fastattn.runtime.session import ExportedModel  # noqa: PLC0415

    label, directory, manifest = exports[0]
    hf = manifest.hf
    tokenizer = directory / "tokenizer.json"
    if hf is None or not tokenizer.is_file():
        return []
    data = text_eval_set(tokenizer, HfTask(hf.task), hf.pad_token_id or 0, None, manifest.max_length)
    reference = f"{torch_label} (PyTorch)"  # its own key: an export may carry the checkpoint's name too
    forwards = {reference: _torch_forward(checkpoint, manifest)}
    for name, path, m in exports:
        model = ExportedModel.load(path, "cpu", threads)
        forwards[name] = forward(m, {g.name: model.graph(g.name).run for g in m.graphs})
    for om in models:
        forwards[om.label] = _onnx_forward(om.file, manifest, threads)
    task = task_of(manifest)
    figures = evaluate(task, forwards, data, reference)
    against = "PyTorch (transformers, eager attention, fp32)"
    return [AccuracyRecord(torch_label if name == reference else name, task.value, data.source, against, f.perplexity,
                           f.agreement, f.cosine, f.cosine_min, pytorch=name == reference)
            for name, f in figures.items()]  # fmt: skip
