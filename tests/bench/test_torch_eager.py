"""PyTorch eager rows: the same weights, the same inputs and the same phases as the export's rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastattn.bench.measure import measure, sizes_for
from fastattn.bench.plan import PYTORCH, Job, Settings
from fastattn.bench.torch_eager import _call, _modules, _tensors, measure_torch
from fastattn.errors import InputError
from fastattn.runtime import load
from fastattn.runtime.manifest import Manifest
from fastattn.runtime.session import sample_graph

FAST = Settings(threads=1, warmup=1, repeats=3, min_time=0.0, decode_steps=2, pause=0.0, isolate=False)


def test_eager_row_mirrors_the_onnx_row(decoder_export):
    ckpt, exported = decoder_export
    job = Job(str(exported.output), "dec", PYTORCH, 1, 8, FAST, checkpoint=str(ckpt))
    eager = measure_torch(job)
    onnx = measure(Job(str(exported.output), "dec", "cpu", 1, 8, FAST))
    assert (
        eager.provider == PYTORCH and eager.engine == f"torch {torch.__version__}" and eager.target == "eager"
    )
    assert eager.export == ckpt.name and eager.model == onnx.model and eager.attention == onnx.attention
    assert [(p.name, p.sizes) for p in eager.phases] == [(p.name, p.sizes) for p in onnx.phases]
    assert len(eager.phase("decode").samples_ms) == 4  # two rounds of 2 steps for 3 repeats
    assert eager.peak_memory_mb is not None and eager.session_providers == []


def test_same_weights_and_inputs_give_the_same_logits(decoder_export):
    """What the eager rows time is the model the export holds, on the arrays the ONNX rows get."""
    ckpt, exported = decoder_export
    manifest = Manifest.load(exported.output)
    entry = manifest.graphs[0]
    modules = _modules(Job(str(exported.output), "dec", PYTORCH, 2, 8, FAST, checkpoint=str(ckpt)), manifest)
    arrays = sample_graph(entry, sizes_for(entry, 2, 8), FAST.seed)
    with torch.inference_mode():
        eager = _call(modules["model"], entry, _tensors(arrays))
    onnx = load(exported.output).run(arrays)
    np.testing.assert_allclose(eager["logits"].numpy(), onnx["logits"], atol=1e-4, rtol=1e-4)


def test_checkpoint_of_another_model_is_refused(decoder_export, seq2seq_export):
    (_, exported), (other, _) = decoder_export, seq2seq_export
    with pytest.raises(InputError, match=r"is not the model exported in .*\(their configs differ\)"):
        measure_torch(Job(str(exported.output), "dec", PYTORCH, 1, 8, FAST, checkpoint=str(other)))
