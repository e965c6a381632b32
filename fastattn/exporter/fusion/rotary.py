"""``rotary``: fastattn's ``apply_rotary`` on a packed (B, S, H·D) projection -> one RotaryEmbedding.

The pattern is what torch exports for :func:`fastattn.models.layers.apply_rotary` with
the angles of :class:`fastattn.models.layers.Rotary`::

    emb = Unsqueeze(Concat(freqs, freqs, axis=-1), [2])            # (B, S, 1, D), shared
    h   = Reshape(x, (B, S, H, D))                                 # x: (B, S, H·D)
    rot = Concat(Neg(Slice(h, D/2:)), Slice(h, :D/2), axis=-1)     # rotate-half
    out = Reshape(h·Cos(emb) + rot·Sin(emb), (B, S, H·D))

and it becomes, with ``cos = Cos(freqs)``, ``sin = Sin(freqs)`` of shape (B, S, D/2)
(computed once per ``freqs`` and shared by every layer):

- standard: ONNX ``RotaryEmbedding(x, cos, sin, num_heads=H)`` (opset 23), the form
  without position ids, whose caches are per token: exact for any position;
- contrib: ``com.microsoft::RotaryEmbedding(x, ids, cos_cache, sin_cache, num_heads=H)``.
  The contrib op only takes a (positions, D/2) cache indexed by position ids, so the
  per-token angles become the cache, flattened to (B·S, D/2), and ``ids = arange(B·S)``
  reshaped to (B, S): exact for any position, no maximum length baked in.

onnxscript's own rotary rules do not match this graph: they expect Hugging Face's
(B, H, S, D) layout (cos unsqueezed at axis 1, a static head count in dim 1) while
fastattn rotates (B, S, H, D) views of packed projections (cos unsqueezed at axis 2,
dim 1 is the dynamic sequence), and ``ort_fusions.cos_sin_cache`` expects HF's
``MatMul(inv_freq, position_ids)`` angles where fastattn multiplies. Both x and the
output here are packed (B, S, H·D), which is the 3-D form both ops take natively, so
the two Reshapes go away as well.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import _ir_utils, pattern

from fastattn.exporter.fusion.base import MS, PatternFusion, op_id


class PackedRotaryFusion(pattern.RewriteRuleClassBase):
    """The onnxscript rule: ``pattern`` / ``check`` / ``rewrite`` for one target."""

    def __init__(self, contrib: bool):
        # The angle nodes are shared by every layer: keep matched nodes, drop the dead ones after.
        super().__init__("PackedRotaryContrib" if contrib else "PackedRotary23", remove_nodes=False)
        self._contrib = contrib
        self._caches: dict[tuple, tuple[ir.Value, ...]] = {}

    def pattern(self, op, x, freqs, unsqueeze_axes, heads_shape, packed_shape,
                start1, end1, axes1, steps1, start2, end2, axes2, steps2):  # fmt: skip
        emb = op.Unsqueeze(op.Concat(freqs, freqs, axis=-1), unsqueeze_axes)
        heads = op.Reshape(x, heads_shape, _outputs=["heads"])
        first = op.Slice(heads, start1, end1, axes1, steps1)
        second = op.Slice(heads, start2, end2, axes2, steps2)
        rotated = op.Concat(op.Neg(second), first, axis=-1)
        out = op.Add(op.Mul(heads, op.Cos(emb)), op.Mul(rotated, op.Sin(emb)))
        return op.Reshape(out, packed_shape, _outputs=["packed"])

    def check(self, context, x, freqs, heads, packed, unsqueeze_axes, start1, end1, axes1, steps1,
              start2, end2, axes2, steps2, **_) -> pattern.MatchResult:  # fmt: skip
        result = pattern.MatchResult()
        if heads.shape is None or heads.shape.rank() != 4:
            return result.fail("the per-head view is not known to be 4-D (B, S, H, D)", heads)
        num_heads, head_size = heads.shape[2], heads.shape[3]
        if not isinstance(num_heads, int) or not isinstance(head_size, int):
            return result.fail("head count or head size is not static", heads)
        if head_size % 2:
            return result.fail(f"head size {head_size} is odd", heads)
        half = head_size // 2
        if x.shape is None or x.shape.rank() != 3 or x.shape[2] != num_heads * head_size:
            return result.fail(f"x is not a packed (B, S, {num_heads}·{head_size}) projection", x)
        if packed.shape is None or list(packed.shape) != list(x.shape):
            return result.fail("the rotated heads are not reshaped back to x's packed shape", packed)
        if list(heads.shape)[:2] != list(x.shape)[:2]:
            return result.fail("the per-head view does not keep x's batch and sequence dims", heads)
        if not _ir_utils.is_singleton_value(unsqueeze_axes, lambda a: a in (2, -2)):
            return result.fail("cos/sin are not unsqueezed at the head axis (2)", unsqueeze_axes)
        if freqs.shape is None or freqs.shape.rank() != 3 or freqs.shape[2] != half:
            return result.fail(f"the angles are not (B, S, {half})", freqs)
        for axes, steps in ((axes1, steps1), (axes2, steps2)):
            if not _ir_utils.is_singleton_value(axes, lambda a: a in (3, -1)):
                return result.fail("rotate-half does not slice the last axis", axes)
            if not _ir_utils.is_singleton_value(steps, 1):
                return result.fail("rotate-half slices with a step other than 1", steps)
        halves = (
            _ir_utils.is_singleton_value(start1, 0)
            and _ir_utils.is_singleton_value(end1, half)
            and _ir_utils.is_singleton_value(start2, half)
            and _ir_utils.is_singleton_value(end2, lambda e: e >= head_size)
        )
        if not halves:
            return result.fail(f"rotate-half does not split the head into [:{half}] and [{half}:]", start1)
        return result

    def rewrite(self, op, x, freqs, heads, **_):
        num_heads, half = heads.shape[2], freqs.shape[2]
        batch_seq = list(x.shape[:2])
        # Angles of a shape not provably x's (B, S) (a decoder's positions are a slice of the
        # mask's) are expanded to it: exactly the broadcast the Mul did.
        known = all(isinstance(d, int) or d.value for d in batch_seq)
        same = known and list(freqs.shape[:2]) == batch_seq
        key = (freqs, "same") if same else (freqs, *(batch_seq if known else [id(x)]))
        if key not in self._caches:
            self._caches[key] = self._tables(op, freqs if same else self._expand(op, freqs, x), half)
        if self._contrib:
            return op.RotaryEmbedding(x, *self._caches[key], num_heads=num_heads, interleaved=0, _domain=MS)
        return op.RotaryEmbedding(x, *self._caches[key], num_heads=num_heads, interleaved=0)

    @staticmethod
    def _expand(op, freqs: ir.Value, x: ir.Value) -> ir.Value:
        shape = op.Concat(op.Shape(x, start=0, end=2), op.Constant(value_ints=[freqs.shape[2]]), axis=0)
        return op.Expand(freqs, shape)

    def _tables(self, op, freqs: ir.Value, half: int) -> tuple[ir.Value, ...]:
        """(cos, sin) of shape (B, S, D/2); contrib: (ids, cos_cache, sin_cache), ids indexing B·S rows."""
        cos, sin = op.Cos(freqs), op.Sin(freqs)
        if not self._contrib:
            return cos, sin
        batch_seq = op.Shape(freqs, start=0, end=2)
        count = op.ReduceProd(batch_seq, keepdims=0)
        ids = op.Reshape(op.Range(op.Constant(value_int=0), count, op.Constant(value_int=1)), batch_seq)
        rows = op.Constant(value_ints=[-1, half])
        return ids, op.Reshape(cos, rows), op.Reshape(sin, rows)

    def cleanup(self):
        self._caches.clear()


class Rotary(PatternFusion):
    name = "rotary"

    def __init__(self):
        self._rules = {contrib: PackedRotaryFusion.rule(contrib).commute() for contrib in (True, False)}

    def emits(self, contrib: bool) -> str:
        return f"{MS}::RotaryEmbedding" if contrib else "RotaryEmbedding"

    def min_opset(self, contrib: bool) -> int:
        return 0 if contrib else 23

    def rewrite_rules(self, contrib: bool):
        return self._rules[contrib]

    def is_fused(self, node: ir.Node) -> bool:
        return op_id(node) in ("RotaryEmbedding", f"{MS}::RotaryEmbedding")
