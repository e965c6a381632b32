"""What a lowering rule is: a small object that turns one ``fastattn::Attention`` node into
an execution provider's kernel.

A rule says whether it can take a node (:meth:`LoweringRule.check`, with a reason when it
cannot), which ops it emits (contrib ops or standard ones, the opset it needs), and how
(:meth:`LoweringRule.rewrite`, which builds nodes computing the node's outputs from its
inputs). A rule that is exact only for some inputs (e.g. no padding) returns a runtime
``guard``; the node then becomes ``If(guard, rule, fallback)`` so every input stays exact.
"""

from __future__ import annotations

import itertools
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from fastattn.attention.onnx_function import DOMAIN, OP_TYPE
from fastattn.attention.spec import AttentionSpec
from fastattn.targets import Target

MS = "com.microsoft"


@dataclass(frozen=True)
class MatchResult:
    """Whether a rule can lower a node, and if not, why."""

    ok: bool
    reason: str = ""

    @classmethod
    def fail(cls, reason: str) -> MatchResult:
        return cls(False, reason)

    def __bool__(self) -> bool:
        return self.ok


OK = MatchResult(True)


class Builder:
    """Emit nodes into an :class:`ir.tape.Tape` with onnxscript-like calls: ``b.MatMul(x, w)``.

    ``_domain`` sets the op domain, ``_outputs`` the number of outputs; other keyword
    arguments are attributes. ``None`` inputs become missing optional inputs.
    """

    _ids = itertools.count()

    def __init__(self, tape: ir.tape.Tape | None = None):
        self.tape = tape or ir.tape.Tape()

    def __getattr__(self, op_type: str) -> Callable[..., ir.Value | Sequence[ir.Value]]:
        if op_type.startswith("_"):
            raise AttributeError(op_type)

        def emit(*inputs, _domain: str = "", _outputs: int = 1, **attributes):
            attrs = {k: v for k, v in attributes.items() if v is not None}
            if _outputs == 1:
                return self.named(self.tape.op(op_type, list(inputs), attrs, domain=_domain))
            outs = self.tape.op_multi_out(op_type, list(inputs), attrs, domain=_domain, num_outputs=_outputs)
            return [self.named(v) for v in outs]

        return emit

    def named(self, value: ir.Value) -> ir.Value:
        """A name unique in the process: subgraphs built by separate builders must not collide (SSA)."""
        value.name = f"fa{os.getpid():x}_{next(Builder._ids)}"
        return value

    def const(self, value, dtype=None) -> ir.Value:
        """A Constant node holding ``value`` (numpy-convertible)."""
        array = np.asarray(value, dtype=dtype)
        return self.named(self.tape.op("Constant", [], {"value": ir.tensor(array)}))

    def ints(self, *values: int) -> ir.Value:
        return self.const(np.array(values, dtype=np.int64))

    @property
    def nodes(self) -> Sequence[ir.Node]:
        return self.tape.nodes


@dataclass
class AttentionSite:
    """One ``fastattn::Attention`` node of a graph, with its attributes and inputs by name."""

    node: ir.Node
    spec: AttentionSpec
    query: ir.Value
    key: ir.Value
    value: ir.Value
    past_key: ir.Value | None
    past_value: ir.Value | None
    key_mask: ir.Value | None
    layer: str  # the PyTorch module it came from, for reports

    @classmethod
    def from_node(cls, node: ir.Node, layer: str = "") -> AttentionSite:
        attr = {name: a.value for name, a in node.attributes.items()}
        spec = AttentionSpec(
            attr["num_heads"], attr["kv_num_heads"], bool(attr.get("causal", 0)),
            attr.get("window", 0), attr.get("global_tokens", 0), attr.get("scale", 0.0), attr.get("block", 0),
        )  # fmt: skip
        inputs = list(node.inputs) + [None] * (6 - len(node.inputs))
        return cls(node, spec, *inputs[:6], layer=layer or node.name)

    @staticmethod
    def is_attention(node: ir.Node) -> bool:
        return node.domain == DOMAIN and node.op_type == OP_TYPE

    @property
    def presents_used(self) -> bool:
        return any(out.uses() or out.is_graph_output() for out in self.node.outputs[1:])

    @property
    def head_size(self) -> int | None:
        """D, when the key's packed last dim is static."""
        dim = self.key.shape[-1] if self.key.shape is not None else None
        return dim // self.spec.kv_num_heads if isinstance(dim, int) else None

    @property
    def value_head_size(self) -> int | None:
        dim = self.value.shape[-1] if self.value.shape is not None else None
        return dim // self.spec.kv_num_heads if isinstance(dim, int) else None

    def signature(self) -> tuple:
        """Sites with equal signatures behave alike: one measurement serves them all."""
        return (self.spec, self.past_key is not None, self.key_mask is not None, self.head_size, self.value_head_size)


class LoweringRule(ABC):
    """Turns a ``fastattn::Attention`` node into a faster kernel, where it can do so exactly."""

    name: ClassVar[str]
    contrib: ClassVar[bool] = False  # emits com.microsoft ops (only ORT's CPU/CUDA EPs run them)
    min_opset: ClassVar[int] = 0  # the default-domain opset its ops need
    # Targets whose providers run the ops it emits. ONNX Attention (opset 23) is missing from
    # OpenVINO's ONNX frontend in onnxruntime-openvino 1.24.1 ("does not support ... Attention").
    targets: ClassVar[frozenset[Target]] = frozenset({Target.CPU, Target.CUDA})

    @abstractmethod
    def check(self, site: AttentionSite) -> MatchResult:
        """Can this rule lower ``site``? A failure says why."""

    @abstractmethod
    def rewrite(self, site: AttentionSite, b: Builder) -> tuple[ir.Value, ir.Value | None, ir.Value | None]:
        """Nodes computing (output, present_key, present_value); presents may be None when unused."""

    def guard(self, site: AttentionSite, b: Builder) -> ir.Value | None:
        """A boolean scalar that is true when this rule is exact for the inputs at hand; None = always."""
        return None

    def __repr__(self) -> str:
        return f"<lowering {self.name}>"
