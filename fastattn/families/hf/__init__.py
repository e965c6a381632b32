"""Hugging Face checkpoints: the ``huggingface`` model family, mapped onto fastattn's own models.

    fastattn-export ./my-llama/ -o out/      a local directory: config.json + safetensors (+ tokenizer)

A model type with an architecture spec (:mod:`.architectures`: BERT, RoBERTa, DistilBERT,
GPT-2, Llama, Mistral, Qwen2, BART, Marian) becomes a fastattn model through its declarative
spec, so it gets everything fastattn's own models have (fused attention per EP, trimmed KV
caches, generate, --kv-buffer, fusions, gates), validated against the transformers model
itself. Other model types whose transformers class routes attention through
``AttentionInterface`` export with declared attention and no cache (:mod:`.generic`). An
unpickled ``PreTrainedModel`` of a spec'd type takes the same route. Nothing is ever downloaded.

    checkpoint.py    read a local checkpoint directory (config, weights, carried files)
    spec.py          Architecture: HF config fields -> fastattn ModelConfig, weight tables, tasks
    architectures/   one spec per family of model types, one registry
    convert.py       weights onto fastattn's models;  weights.py: the weight-name mapping
    reference.py     the transformers model as each graph's validation reference (its own caches)
    eval_text.py     held-out stdlib text, tokenized by the model's tokenizer (quantization gates)
    generic.py       the AttentionInterface route;  prepare.py: both routes -> Prepared
"""

from __future__ import annotations

from fastattn.errors import InputError
from fastattn.families.base import Family, ModelSource, Prepared, PrepareRequest
from fastattn.families.hf.checkpoint import is_checkpoint_dir
from fastattn.families.hf.spec import FAMILY
from fastattn.families.load import ModelFormat
from fastattn.runtime.manifest import Manifest


class HuggingFaceFamily(Family):
    name = FAMILY
    description = ("Hugging Face checkpoint directories (config.json + safetensors) of BERT, RoBERTa, DistilBERT, "
                   "GPT-2, Llama, Mistral, Qwen2, BART, Marian, and other AttentionInterface models without a cache")

    def claims(self, source: ModelSource) -> bool:
        if is_checkpoint_dir(source.path):
            return True
        if not source.path.is_file() or not source.allow_pickle:
            return False
        loaded = source.loaded
        config = getattr(loaded.module, "config", None)
        if loaded.format is not ModelFormat.PICKLED_MODULE or not hasattr(config, "model_type"):
            return False
        from fastattn.families.hf import architectures  # noqa: PLC0415

        return architectures.find(config.model_type) is not None

    def prepare(self, source: ModelSource, request: PrepareRequest) -> Prepared:
        from fastattn.families.hf.prepare import prepare_checkpoint, prepare_pretrained  # noqa: PLC0415

        if request.inputs:
            raise InputError(f"{source.path.name} is a Hugging Face model, whose inputs fastattn declares",
                             "drop --input")  # fmt: skip
        if is_checkpoint_dir(source.path):
            return prepare_checkpoint(source.path, request.task, request.kv_buffer)
        loaded = source.loaded
        return prepare_pretrained(loaded.module, source.path, request.task, request.kv_buffer, loaded.notes)

    def expected_fusions(self, manifest: Manifest) -> dict[str, dict[str, int]]:
        if manifest.config is None:  # the AttentionInterface route: transformers' own graph
            return {}
        from fastattn.families.fastattn.fusions import expected_counts  # noqa: PLC0415
        from fastattn.models.config import ModelConfig  # noqa: PLC0415

        cfg = ModelConfig.from_dict(manifest.config)
        return {g.name: expected_counts(cfg, g.name) for g in manifest.graphs}
