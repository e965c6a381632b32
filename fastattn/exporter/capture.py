"""Capture a graph with ``torch.onnx.export(dynamo=True)``; attention arrives as ``fastattn::Attention``.

The fastattn op is opaque to torch.export (it has a fake kernel), and its translation
emits a single ``fastattn::Attention`` node; :func:`attach_functions` then gives each
node its model-local function body. Dynamic dims come from the graph's input specs and
keep their names in the ONNX model.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import warnings

import onnx_ir as ir
import torch

from fastattn.attention.onnx_function import attach_functions, register_schema, translate
from fastattn.attention.op import ATTENTION_OP
from fastattn.errors import ExportError
from fastattn.exporter.options import DEFAULT_OPSET
from fastattn.families.graphs import GraphDef, mha_fastpath
from fastattn.runtime.manifest import TensorSpec

log = logging.getLogger(__name__)




def capture(graph: GraphDef, opset: int = DEFAULT_OPSET) -> ir.Model:
    """Export ``graph`` to an in-memory ONNX model with named dynamic dims and fastattn functions."""
    register_schema()
    args = graph.sample(graph.sizes())
    is_program = isinstance(graph.module, torch.export.ExportedProgram)
    log.info("capturing graph %s (%d inputs) with torch.onnx.export(dynamo=True)", graph.name, len(args))
    try:
        with _quiet(), torch.no_grad(), mha_fastpath(False):
            program = torch.onnx.export(
                graph.module,
                args,
                dynamo=True,
                dynamic_shapes=None if is_program else _bind(graph.module, _dynamic_shapes(graph.inputs)),
                custom_translation_table={ATTENTION_OP: translate},
                input_names=[s.name for s in graph.inputs],
                output_names=[s.name for s in graph.outputs],
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
    except Exception as e:  # torch reports export failures with many exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(
            f"torch.onnx.export failed on graph {graph.name!r}: {first}",
            "check that the model runs on the sample inputs; rerun with -v for the full trace",
        ) from e
    model = program.model
    _name_dims(model.graph.inputs, graph.inputs)
    _name_dims(model.graph.outputs, graph.outputs)
    attach_functions(model)
    _strip_trace_metadata(model)
    return model


def _strip_trace_metadata(model: ir.Model) -> None:
    """Drop per-node Python stack traces: they bloat the file and leak local paths."""
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for key in ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node"):
            node.metadata_props.pop(key, None)



def _torch_dim_name(name: str) -> str:
    return re.sub(r"\W", "_", name.replace("+", "_plus_"))


def _dynamic_shapes(specs: list[TensorSpec]) -> tuple:
    dims: dict[str, torch.export.Dim] = {}
    shapes = []
    for spec in specs:
        axes = {}
        for axis, d in enumerate(spec.shape):
            if isinstance(d, str):
                if d not in dims:
                    dims[d] = torch.export.Dim(_torch_dim_name(d), min=0)
                axes[axis] = dims[d]
        shapes.append(axes or None)
    return tuple(shapes)


def _bind(module: torch.nn.Module, shapes: tuple) -> tuple:
    """Shape the per-input dynamic shapes like ``forward``'s signature (``*args`` takes a nested tuple)."""
    params = list(inspect.signature(module.forward).parameters.values())
    bound: list = []
    for i, param in enumerate(params):
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return (*bound, tuple(shapes[i:]))
        if i < len(shapes):
            bound.append(shapes[i])
    return tuple(bound)


def _name_dims(values, specs: list[TensorSpec]) -> None:
    """Give the ONNX graph's inputs/outputs the dim names of their specs."""
    by_name = {s.name: s for s in specs}
    for value in values:
        spec = by_name.get(value.name)
        if spec is None or value.shape is None or len(value.shape) != len(spec.shape):
            continue
        value.shape = ir.Shape([d if isinstance(d, int) else ir.SymbolicDim(d) for d in spec.shape])


@contextlib.contextmanager
def _quiet():
    """torch.onnx logs and warns a lot on success; keep it out of the user's terminal."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
