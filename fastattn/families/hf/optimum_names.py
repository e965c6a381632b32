"""Optimum's cache names for Hugging Face decoders, so ``ORTModelForCausalLM`` opens the export as it is.

Optimum (optimum-onnx 0.1, ``optimum/onnxruntime/modeling_decoder.py``) finds a decoder's cache by
name: inputs containing ``.key`` / ``.value`` are the pasts, in graph order, outputs containing them
the presents, paired (key, value) per layer in the same order. Its own exports name them
``past_key_values.{i}.key`` / ``past_key_values.{i}.value`` and ``present.{i}.key`` /
``present.{i}.value``; fastattn's HF decoders take those names (``fastattn_names`` stays for
fastattn's own models: ``past_key_{i}`` / ``present_key_{i}``). Everything else reads the names
from the manifest's cache pairs (the runtime, bench, examples/node and examples/web), so only the
names change. Encoders already match (``input_ids``, ``attention_mask`` -> ``last_hidden_state``);
encoder-decoders have a different layout and get an adapter (:mod:`fastattn.exporter.optimum_view`).
"""

from __future__ import annotations

import re
from dataclasses import replace

from fastattn.families.graphs import GraphDef
from fastattn.runtime.manifest import CachePair

_FASTATTN = re.compile(r"(past|present)_(key|value)_(\d+)$")


def optimum_name(name: str) -> str:
    """``past_key_3`` -> ``past_key_values.3.key``, ``present_value_0`` -> ``present.0.value``; others unchanged."""
    m = _FASTATTN.fullmatch(name)
    if m is None:
        return name
    side, kind, layer = m.groups()
    return f"past_key_values.{layer}.{kind}" if side == "past" else f"present.{layer}.{kind}"


def with_optimum_names(graph: GraphDef) -> GraphDef:
    """``graph`` with its cache inputs/outputs and cache pairs renamed (positional modules need nothing else)."""
    graph.inputs = [replace(s, name=optimum_name(s.name)) for s in graph.inputs]
    graph.outputs = [replace(s, name=optimum_name(s.name)) for s in graph.outputs]
    graph.cache = [CachePair(optimum_name(p.past), optimum_name(p.present), p.axis) for p in graph.cache]
    return graph
