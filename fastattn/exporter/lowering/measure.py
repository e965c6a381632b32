"""Measure lowering candidates of one attention node on the target provider.

Each candidate is lowered into a model holding only that node, timed on ONNX Runtime at
each shape of the profile (median of repeated runs after warm-up), and checked against
the portable function body on the same inputs: a candidate that disagrees is rejected.
The timing itself is :mod:`fastattn.runtime.timing`, run here or, for a provider that lives
in its own environment (OpenVINO EP), by its worker there.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import InlinePass, RemoveUnusedFunctionsPass

from fastattn.attention.onnx_function import DOMAIN, OP_TYPE, attach_functions
from fastattn.errors import ProviderError
from fastattn.exporter.lowering.apply import Choice, lower
from fastattn.exporter.lowering.base import AttentionSite, LoweringRule
from fastattn.exporter.lowering.portable import PORTABLE
from fastattn.runtime.environments import PACKAGE_ROOT, here, python_for
from fastattn.runtime.providers import resolve
from fastattn.runtime.timing import Timing, read_result, time_models, write_job


@dataclass(frozen=True)
class ShapeCase:
    """One shape to measure at: batch, new tokens, cached tokens (and key length of cross-attention)."""

    name: str
    batch: int
    sequence: int
    past: int = 0
    keys: int = 0  # cross-attention: the key length; 0 = self-attention


DEFAULT_PROFILE = (ShapeCase("prefill", 1, 512), ShapeCase("decode", 1, 1, past=512))
ENCODER_PROFILE = (ShapeCase("encode", 1, 512),)
CROSS_PROFILE = (ShapeCase("decode", 1, 1, keys=512), ShapeCase("prefill", 1, 64, keys=512))


def profile_for(site: AttentionSite, profile: Sequence[ShapeCase] | None) -> Sequence[ShapeCase]:
    """The shapes a site is measured at: the user's, or a default by kind of site."""
    if profile:
        cases = list(profile)
    elif site.past_key is not None:
        cases = list(DEFAULT_PROFILE)
    elif _is_cross(site):
        cases = list(CROSS_PROFILE)
    else:
        cases = list(ENCODER_PROFILE)
    if site.past_key is None:  # no cache: nothing is decoded step by step
        cases = [ShapeCase(c.name, c.batch, c.sequence + c.past, 0, c.keys) for c in cases]
    return cases


def _is_cross(site: AttentionSite) -> bool:
    q, k = site.query.shape, site.key.shape
    return q is not None and k is not None and len(q) == len(k) == 3 and q[1] != k[1] and not site.spec.causal


def single_site_model(site: AttentionSite, opset: int) -> ir.Model:
    """A model whose only node is a copy of ``site`` (same attributes and optional inputs)."""
    hq, hkv = site.spec.num_heads, site.spec.kv_num_heads
    d, dv = site.head_size or 64, site.value_head_size or site.head_size or 64
    f32 = ir.TensorType(ir.DataType.FLOAT)
    keys = "T" if _is_cross(site) else "S"  # self-attention: queries and keys share one dim, as exported
    specs = [("query", f32, ["B", "S", hq * d]), ("key", f32, ["B", keys, hkv * d]), ("value", f32, ["B", keys, hkv * dv])]
    if site.past_key is not None:
        specs += [("past_key", f32, ["B", hkv, "P", d]), ("past_value", f32, ["B", hkv, "P", dv])]
    if site.key_mask is not None:
        specs.append(("key_mask", ir.TensorType(ir.DataType.INT64), ["B", "L"]))
    inputs = {name: ir.Value(name=name, type=t, shape=ir.Shape(shape)) for name, t, shape in specs}
    node_inputs = [inputs.get(n) for n in ("query", "key", "value", "past_key", "past_value", "key_mask")]
    while node_inputs[-1] is None:
        node_inputs.pop()
    attributes = {name: attr for name, attr in site.node.attributes.items()}
    node = ir.Node(DOMAIN, OP_TYPE, node_inputs, attributes=list(attributes.values()), num_outputs=3)
    for value, name in zip(node.outputs, ("output", "present_key", "present_value")):
        value.name, value.type = name, f32
    graph = ir.Graph(list(inputs.values()), list(node.outputs), nodes=[node], opset_imports={"": opset})
    model = ir.Model(graph, ir_version=10)
    attach_functions(model)
    return model


def feeds_for(site: AttentionSite, case: ShapeCase, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    hq, hkv = site.spec.num_heads, site.spec.kv_num_heads
    d, dv = site.head_size or 64, site.value_head_size or site.head_size or 64
    keys = case.keys or case.sequence
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    feeds = {"query": f(case.batch, case.sequence, hq * d), "key": f(case.batch, keys, hkv * d),
             "value": f(case.batch, keys, hkv * dv)}  # fmt: skip
    if site.past_key is not None:
        slots = case.past
        if site.spec.block and site.key_mask is not None:  # a hierarchical model's cache: summaries + open block
            slots = case.past // site.spec.block + case.past % site.spec.block
        feeds.update(past_key=f(case.batch, hkv, slots, d), past_value=f(case.batch, hkv, slots, dv))
    if site.key_mask is not None:
        feeds["key_mask"] = np.ones((case.batch, case.past + keys), np.int64)
    return feeds


Measurement = Timing  # rule, case, ms (None: rejected), max_abs_error, reason, spread


def measure(
    site: AttentionSite,
    rules: Sequence[LoweringRule],
    cases: Sequence[ShapeCase],
    provider: str,
    opset: int,
    repeats: int = 10,
    threads: int | None = None,
    inline: bool = False,
) -> list[Measurement]:
    """Time every rule at every case on ``provider``; check each against the portable body.

    ``inline``: function bodies are expanded into standard ops first (providers that do not run
    model-local functions, OpenVINO EP). A provider missing here but installed in its own
    environment is measured there by the :mod:`fastattn.runtime.timing` worker.
    """
    models = {rule.name: candidate_model(site, rule, opset, inline) for rule in dict.fromkeys([PORTABLE, *rules])}
    feeds = [(case.name, feeds_for(site, case)) for case in cases]
    timed = [rule.name for rule in rules]
    if here(provider):
        return time_models(models, PORTABLE.name, feeds, provider, repeats, threads, timed)
    python = python_for(provider)
    if python is None:
        resolve([provider])  # raises the ProviderError saying what is missing and how to install it
        raise ProviderError(f"provider {provider!r} is not usable here", f"create its environment: make {provider}-env")
    return _remote(python, models, feeds, provider, repeats, threads, timed)


def candidate_model(site: AttentionSite, rule: LoweringRule, opset: int, inline: bool = False) -> bytes:
    """The serialized one-node model of ``site`` lowered by ``rule`` (inlined when asked)."""
    model = single_site_model(site, opset)
    model_site = AttentionSite.from_node(next(n for n in model.graph if AttentionSite.is_attention(n)))
    lower(model, {model_site.node.name: Choice(rule)}, {model_site.node.name: model_site})
    if inline:
        InlinePass()(model)
        RemoveUnusedFunctionsPass()(model)
    return ir.serde.serialize_model(model).SerializeToString()


def _remote(python: Path, models: dict[str, bytes], feeds: list, provider: str, repeats: int,
            threads: int | None, timed: list[str]) -> list[Measurement]:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fastattn-timing-") as tmp:
        write_job(Path(tmp), models, PORTABLE.name, feeds, provider, repeats, threads, timed)
        run = subprocess.run([str(python), "-m", "fastattn.runtime.timing", tmp], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}, timeout=3600)  # fmt: skip
        try:
            return read_result(run.stdout)
        except (RuntimeError, ValueError, IndexError) as e:
            last = (run.stderr.strip().splitlines() or [f"exit code {run.returncode}"])[-1]
            reason = str(e) if isinstance(e, RuntimeError) else last  # its own message, else what it printed
            raise ProviderError(f"the {provider} timing worker ({python}) failed: {reason}",
                                f"check `{python} -m fastattn.runtime.timing` runs") from e  # fmt: skip
