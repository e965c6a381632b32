"""Session fixtures: each tiny Hugging Face checkpoint is built once, and each export made once, per worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastattn.exporter.pipeline import ExportOptions, export
from tests.hf.checkpoints import BUILDERS, OTHERS


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """transformers' generate and the validation references run single-threaded: with two pytest workers on
    two cores, two threads each made transformers' generate 20x slower (0.7 vs 13.4 s for 3 x 64 tokens)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """``hf_checkpoint(name)``: the directory of the tiny checkpoint of family ``name``."""
    root = tmp_path_factory.mktemp("hf")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = {**BUILDERS, **OTHERS}[name](root / name)
        return built[name]

    return get


@pytest.fixture(scope="session")
def hf_export(hf_checkpoint, tmp_path_factory):
    """``hf_export(name, **options)``: the ExportResult of that checkpoint (CPU target, 3 timed runs per lowering
    candidate, one ONNX Runtime thread), made once per set of options."""
    root = tmp_path_factory.mktemp("hf-out")
    made: dict[tuple, object] = {}

    def get(name: str, **options):
        key = (name, *sorted(options.items()))
        if key not in made:
            out = root / f"{name}-{len(made)}"
            made[key] = export(hf_checkpoint(name), ExportOptions(out, repeats=3, threads=1, **options))
        return made[key]

    return get
