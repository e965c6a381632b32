"""The portable rule: keep ``fastattn::Attention`` and its function body (exact everywhere, fast nowhere)."""

from __future__ import annotations

import onnx_ir as ir

from fastattn.attention.onnx_function import DOMAIN, OP_TYPE
from fastattn.exporter.lowering.base import OK, AttentionSite, Builder, LoweringRule, MatchResult
from fastattn.targets import Target


class Portable(LoweringRule):
    name = "portable"
    targets = frozenset(Target)  # inlined where the provider runs no functions

    def check(self, site: AttentionSite) -> MatchResult:
        return OK

    def rewrite(self, site: AttentionSite, b: Builder) -> tuple[ir.Value, ir.Value, ir.Value]:
        attributes = {name: attr.value for name, attr in site.node.attributes.items()}
        inputs = list(site.node.inputs)
        outputs = b.tape.op_multi_out(
            OP_TYPE, inputs, attributes, domain=DOMAIN, overload=site.node.overload, num_outputs=3
        )
        return tuple(b.named(v) for v in outputs)


PORTABLE = Portable()
