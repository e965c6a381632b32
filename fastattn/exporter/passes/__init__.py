"""Graph steps as onnx_ir passes, composed per target in one visible list.

    LowerAttention    plan each fastattn::Attention node's kernel (measured, pinned or forced) and rewrite it
    InlineFunctions   expand function bodies into standard ops (providers that run no functions: OpenVINO)
    Fuse              the rest of each block: norms, GELU, rotary, packed QKV (rules in exporter/fusion)
    FoldConstants     fold scalar constants of inlined graphs, so OpenVINO EP takes them as one partition
    FoldRotary        rotary + packed QKV into GroupQueryAttention (the --kv-buffer decode path)

:func:`optimization_passes` builds the list for a target; every pass keeps what it did
(choices, counts, notes) for the manifest. Each pass modifies the model in place.
"""

from __future__ import annotations

import onnx_ir as ir

from fastattn.exporter.lowering.choose import LoweringOptions
from fastattn.exporter.passes.fold_constants import FoldConstants
from fastattn.exporter.passes.fold_rotary import FoldRotary
from fastattn.exporter.passes.fuse import Fuse
from fastattn.exporter.passes.inline import InlineFunctions
from fastattn.exporter.passes.lower import LowerAttention
from fastattn.targets import Target

__all__ = ["FoldConstants", "FoldRotary", "Fuse", "InlineFunctions", "LowerAttention", "optimization_passes", "run_passes"]


def optimization_passes(options: LoweringOptions, expected_fusions: dict[str, int] | None = None,
                        allow_shortfall: bool = False) -> list[ir.passes.PassBase]:  # fmt: skip
    """The passes that optimize a captured graph for ``options.target`` (none for portable exports)."""
    target = options.target
    if target is Target.PORTABLE:
        return []
    passes: list[ir.passes.PassBase] = [LowerAttention(options)]
    if not target.spec.model_functions:
        passes.append(InlineFunctions())
    passes.append(Fuse(target, expected_fusions, allow_shortfall))
    if not target.spec.model_functions:
        passes.append(FoldConstants())
    if options.fast_decode is not None:
        passes.append(FoldRotary(options.fast_decode))
    return passes


def run_passes(model: ir.Model, passes: list[ir.passes.PassBase]) -> None:
    """Run ``passes`` in order on ``model`` (in place); a failing pass is named with those before it."""
    if passes:
        ir.passes.PassManager(passes, steps=1)(model)
