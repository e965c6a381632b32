"""Declare foreign attention: make it reach the graph as ``fastattn::attention``, not as a Softmax soup.

Two routes, one result (:class:`DeclareResult`: the model to capture, how many attention
calls were declared, and one reason per call that was not):

* **nn.Module** (pickled modules): every ``nn.MultiheadAttention`` (also inside
  ``nn.Transformer`` and its encoder/decoder layers) is replaced, in a structural copy that
  shares the parameters, by :class:`DeclaredMultiheadAttention`, which calls the fastattn op.
  Masks are data, so the model is first run eagerly on the sample inputs and each module
  records what it was given: no mask, a causal one (``is_causal`` or the values of
  ``attn_mask``), and a ``key_padding_mask`` (which stays a graph input). That decision is
  then frozen for the export, and ``nn.TransformerEncoder/Decoder`` get an explicit
  ``is_causal`` hint so that torch's data-dependent causal-mask detection is never traced.
  A mask that is neither empty nor causal is an error (or, with ``strict=False``, the module
  stays PyTorch's own and the reason is reported).

* **ExportedProgram / TorchScript** (TorchScript first goes through torch's
  TorchScript-to-ExportedProgram converter): an FX pass over the program's unlifted module
  rewrites ``aten.scaled_dot_product_attention`` (no mask, ``is_causal``, or a mask proven to
  be built from a (B, L) key-padding mask and/or a causal ``triu(-inf)``), and the fused
  fast-path ops ``aten._transformer_encoder_layer_fwd`` / ``aten._native_multi_head_attention``
  (no mask, or a key-padding mask), into the fastattn op, then re-exports. Anything else is
  left to decompose and reported with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from fastattn.families.graphs import GraphDef
from fastattn.families.module.declare.modules import DeclaredMultiheadAttention, classify_masks, declare_modules
from fastattn.families.module.declare.program import declare_program, rewrite_attention, script_to_program
from fastattn.families.module.declare.result import DeclareResult

__all__ = [
    "DeclareResult",
    "DeclaredMultiheadAttention",
    "classify_masks",
    "declare",
    "declare_modules",
    "declare_program",
    "rewrite_attention",
    "script_to_program",
]

log = logging.getLogger(__name__)


def declare(graph: GraphDef, strict: bool = True) -> tuple[GraphDef, DeclareResult]:
    """Declare the attention of a foreign graph's module; returns the graph to capture and the result."""
    args = graph.sample(graph.sizes())
    module = graph.module
    if isinstance(module, torch.jit.ScriptModule):
        module = script_to_program(module, args)
    if isinstance(module, torch.export.ExportedProgram):
        result = declare_program(module, graph, args)
    else:
        result = declare_modules(module, args, strict=strict)
    log.info("%s: %s", graph.name, result.summary())
    return replace(graph, module=result.module), result
