"""``fp16``: onnxruntime's ``convert_float_to_float16``, for GPU execution providers.

Weights and activations become float16; graph inputs and outputs stay float32
(``keep_io_types``), so the manifest's tensor specs and every caller stay as they are.
What stays float32, and why (measured with onnxruntime 1.32 on the exports of each target):

- onnxruntime's default block list (Range, CumSum, Min/Max, TopK, ...);
- ``keep_float`` sites and fastattn function calls of the main graph (``node_block_list``):
  the converter does not enter model-local function bodies, and the portable attention math
  (mask arithmetic, softmax) keeps its float precision, with Casts around the call;
- nothing inside If branches: the converter converts branch bodies (GroupQueryAttention
  and ONNX Attention in fp16, as the CUDA kernels want), but a *blocked* node inside a
  branch gets its Casts appended to the main graph, which then fails to load ("Graph
  output ... does not exist"). A fastattn call in a fallback branch therefore runs fp16;
  its body is dtype-generic (CastLike), so it loads and runs.

Before converting, ``Constant`` nodes holding ``value_float(s)`` get a ``value`` tensor
instead: the converter converts tensors but not scalar float attributes, and the attention
bodies inlined for OpenVINO then fail to load (``Where`` bound to float16 and float).

On the CPU EP (where validation runs) most ops have no float16 kernel: onnxruntime inserts
Casts and computes MatMul, Add, Mul, BiasGelu in float32, while SimplifiedLayerNormalization,
SkipSimplifiedLayerNormalization and RotaryEmbedding run in float16. The CPU figures thus
cover fp16 weights and fp16 storage between ops, not CUDA's fp16 GEMMs.
"""

from __future__ import annotations

import logging

import onnx
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from fastattn.attention.onnx_function import DOMAIN
from fastattn.quantize.base import ModeSpec
from fastattn.quantize.gates import Gate
from fastattn.quantize.options import Job, Mode
from fastattn.runtime.manifest import Precision

log = logging.getLogger(__name__)


def quantize(job: Job) -> tuple[dict[str, str], dict]:
    """Convert ``job.src`` to float16 but for ``keep_float`` nodes; returns ({}, settings)."""
    model = onnx.load(job.src)
    _constants_as_tensors(model.graph)
    calls = [n.name for n in model.graph.node if n.domain == DOMAIN]
    blocked = sorted({*job.keep, *calls})
    present = {n.op_type for n in model.graph.node}
    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST, node_block_list=blocked
    )
    if job.external:
        onnx.save(
            converted,
            job.dst,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{job.dst.name}.data",
            size_threshold=1024,
        )
    else:
        onnx.save(converted, job.dst)
    settings = {
        "tool": "onnxruntime.transformers.float16.convert_float_to_float16",
        "keep_io_types": True,
        "float_nodes": blocked,
        "float_nodes_reason": "keep_float, and fastattn function calls (attention math kept in float32)",
        "float_ops": sorted(present & set(DEFAULT_OP_BLOCK_LIST)),  # onnxruntime's default block list
    }
    if not job.options.target.spec.fp16_compute:
        settings["note"] = (
            "fp16 is meant for CUDA: the CPU EP computes most float16 ops in float32 through inserted Casts"
        )
    return {}, settings


def _constants_as_tensors(graph: onnx.GraphProto) -> None:
    """``Constant(value_float=x)`` -> ``Constant(value=tensor(x))``, in ``graph`` and its subgraphs."""
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _constants_as_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _constants_as_tensors(g)
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        for i, attr in enumerate(node.attribute):
            if attr.name == "value_float":
                tensor = onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [], [attr.f])
            elif attr.name == "value_floats":
                tensor = onnx.helper.make_tensor(
                    "value", onnx.TensorProto.FLOAT, [len(attr.floats)], list(attr.floats)
                )
            else:
                continue
            del node.attribute[i]
            node.attribute.append(onnx.helper.make_attribute("value", tensor))
            break


MODE = ModeSpec(Mode.FP16, Precision.FP16, Gate(max_ppl_increase=0.001, min_cosine=0.9999, max_accuracy_drop=0.001),
                quantize, renames_inputs=True)  # fmt: skip
