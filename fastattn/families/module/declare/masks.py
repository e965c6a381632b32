"""Mask provenance: prove, on an FX graph, that an attention mask blocks only padded keys and/or the future.

:func:`analyse_mask` follows a mask back through copies, reshapes and expands to its sources
(key-padding fills, ``triu(-inf)`` / ``tril(ones)``), tracking where each source axis ends
up; anything it cannot prove raises :class:`Unsound` with the reason. The small FX helpers
it needs (:func:`node_val`, :func:`node_arguments`, :func:`same_size`) are shared with the
program route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

BLOCK = -1e4  # an additive mask value this low blocks a key: exp() underflows to 0 in float32


class Unsound(Exception):
    """The mask cannot be shown to be a key-padding or causal mask; the message says why."""


aten = torch.ops.aten
_SAME_DATA = {
    aten.contiguous.default,
    aten.clone.default,
    aten.alias.default,
    aten.detach.default,
    aten.lift_fresh_copy.default,
}
_RESHAPES = {
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.flatten.using_ints,
    aten.unflatten.int,
}
_EXPANDS = {aten.expand.default}
_CASTS = {aten._to_copy.default, aten.to.dtype, aten.type_as.default}
_NOTS = {aten.logical_not.default, aten.bitwise_not.default}
_COMBINE = {False: {aten.add.Tensor}, True: {aten.logical_and.default, aten.bitwise_and.Tensor}}
_ZEROS = {aten.zeros_like.default, aten.zeros.default, aten.new_zeros.default}
_FILLS = {aten.masked_fill.Scalar, aten.masked_fill_.Scalar}

Atom = tuple[object, object]  # (size, label): one axis of a source tensor; label None = broadcast


@dataclass
class _Term:
    """One source of blocked keys, with the layout its axes have reached."""

    label: object  # "causal", or the (B, L) bool node
    negate: bool  # for key masks: True when the source's True means "blocked"
    layout: list[list[Atom]]  # per dim: the source axes it is made of, in row-major order


def analyse_mask(
    mask: torch.fx.Node, batch: object, query_len: object, key_len: object, rank: int = 4
) -> tuple[bool, list[tuple[torch.fx.Node, bool]]]:
    """``(causal, [(bool (B, L) node, negate), ...])`` equivalent to an attention mask, or :class:`Unsound`.

    A float mask must be a sum of ``masked_fill(zeros, cond, -inf)`` of a (B, L) ``cond`` and
    ``triu(full(-inf), 1)``; a bool mask (True = attend) an AND of (B, L) bool tensors and
    ``tril(ones)``. Between source and use only order-preserving reshapes, expands, copies
    and float casts may occur; each source axis is tracked through them, so that its final
    place is proven: key masks on (batch, ., ., key), causal masks on (., ., query, key) for
    an SDPA mask (``rank`` 4); only key masks, on (batch, key), for a fused op's (``rank`` 2).
    """
    val = node_val(mask)
    if val is None:
        raise Unsound("the attention mask has no shape information")
    causal, keys = False, []
    for term in _terms(mask, val.dtype == torch.bool):
        layout = [[] for _ in range(rank - len(term.layout))] + term.layout
        if term.label == "causal":
            if rank != 4:
                raise Unsound("a causal mask where only a key-padding mask is expected")
            _expect(layout, [None, None, (query_len, "query"), (key_len, "key")], "a causal mask", same_size)
            causal = True
        else:
            want = [(batch, 0), None, None, (key_len, 1)] if rank == 4 else [(batch, 0), (key_len, 1)]
            _expect(layout, want, "a key-padding mask", _may_be_same)
            keys.append((term.label, term.negate))
    return causal, keys


def _expect(layout: list[list[Atom]], want: list, what: str, same: Callable[[object, object], bool]) -> None:
    """Each dim holds exactly the wanted source axis (``same`` size as wanted), or only broadcast.

    Key masks only need sizes that may agree (``_may_be_same``): the attention op itself
    rejects a mask whose batch or key size differs, so its inputs' sizes already agree.
    """
    for dim, (atoms, w) in enumerate(zip(layout, want)):
        if w is None:
            if any(label is not None for _, label in atoms):
                raise Unsound(f"{what} is laid out on attention axis {dim}, where it cannot be")
            continue
        size, label = w
        if not (atoms == [] and same_size(size, 1)) and not (
            len(atoms) == 1 and atoms[0][1] == label and same(atoms[0][0], size)
        ):
            raise Unsound(f"{what} does not line up with the attention's axis {dim}")


def _terms(node: torch.fx.Node, boolean: bool) -> list[_Term]:
    """The terms of a mask expression, their layouts replayed up to ``node``."""
    chain: list[torch.fx.Node] = []
    negate = False
    while True:
        target = node.target
        if (
            target in _SAME_DATA | _RESHAPES | _EXPANDS
            or _is_full_slice(node)
            or (target in _CASTS and not boolean and _is_float(node.args[0]))
        ):
            chain.append(node)
        elif boolean and target in _NOTS:
            negate = not negate
        else:
            break
        node = node.args[0]
    terms = _source_terms(node, boolean, negate)
    for step in (*chain, node):
        if _mutated(step):
            raise Unsound(f"the mask is modified in place after {step.name}")
    for step in reversed(chain):
        for term in terms:
            term.layout = _step(term.layout, step)
    return terms


def _source_terms(node: torch.fx.Node, boolean: bool, negate: bool) -> list[_Term]:
    target, val = node.target, node_val(node)
    if target in _COMBINE[boolean]:
        if negate:
            raise Unsound("the mask negates a combination of masks")
        out = []
        for operand in node.args[:2]:
            for term in _terms(operand, boolean):
                term.layout = _broadcast(term.layout, val.shape)
                out.append(term)
        return out
    if not boolean and target in _FILLS and _is_zeros(node.args[0]) and _blocks(node.args[2]):
        cond = node.args[1]
        if node_val(cond) is None or node_val(cond).dtype != torch.bool or node_val(cond).dim() != 2:
            raise Unsound("the mask fills -inf where a tensor that is not (batch, key) bool says so")
        if _mutated(cond) or _mutated(node.args[0], writer=node):
            raise Unsound("the padding mask is modified in place")
        return [_Term(cond, True, _source_layout(node_val(cond).shape, (0, 1)))]
    if (
        not boolean
        and target is aten.triu.default
        and _is_full(node.args[0], _blocks)
        and _diagonal(node) == 1
    ):
        return [_Term("causal", False, _source_layout(val.shape, ("query", "key")))]
    if (
        boolean
        and target is aten.tril.default
        and _is_full(node.args[0], lambda x: x is True or x == 1)
        and _diagonal(node) == 0
    ):
        return [_Term("causal", False, _source_layout(val.shape, ("query", "key")))]
    if boolean and val is not None and val.dtype == torch.bool and val.dim() == 2:
        return [_Term(node, negate, _source_layout(val.shape, (0, 1)))]
    if node.op == "placeholder":
        raise Unsound(f"the mask is the input {node.name!r}, which may hold any values")
    raise Unsound(f"the mask is computed by {getattr(target, '__name__', target)} (an arbitrary mask)")


def _mutated(node: torch.fx.Node, writer: torch.fx.Node | None = None) -> bool:
    """Whether an in-place op (other than ``writer``) writes ``node`` or a view of it.

    Programs from torch.export keep in-place ops (``masked_fill_``); a mask written after
    the op that made it would not be the mask the analysis saw.
    """
    for user in node.users:
        schema = getattr(user.target, "_schema", None)
        if user is writer or schema is None or not schema.arguments or user.args[:1] != (node,):
            continue
        alias = schema.arguments[0].alias_info  # set for views and in-place ops of their first argument
        if alias is not None and (alias.is_write or _mutated(user)):
            return True
    return False


def _source_layout(shape, labels) -> list[list[Atom]]:
    return [[] if same_size(size, 1) else [(size, label)] for size, label in zip(shape, labels)]


def _step(layout: list[list[Atom]], node: torch.fx.Node) -> list[list[Atom]]:
    """The layout after one reshape / expand / copy ``node``."""
    shape = node_val(node).shape
    if node.target in _EXPANDS:
        return _broadcast(layout, shape)
    if node.target in _RESHAPES:
        return _regroup(layout, shape)
    return layout


def _broadcast(layout: list[list[Atom]], shape) -> list[list[Atom]]:
    layout = [[] for _ in range(len(shape) - len(layout))] + layout
    return [atoms if atoms or same_size(size, 1) else [(size, None)] for atoms, size in zip(layout, shape)]


def _regroup(layout: list[list[Atom]], shape) -> list[list[Atom]]:
    """Row-major reshape: consecutive atoms whose sizes multiply to each new dim's size."""
    atoms = [a for dim in layout for a in dim]
    out: list[list[Atom]] = []
    for size in shape:
        group: list[Atom] = []
        product: object = 1
        while not same_size(product, size):
            if not atoms:
                raise Unsound("the mask is reshaped in a way that mixes its axes")
            group.append(atoms.pop(0))
            product = _expr(product) * _expr(group[-1][0])
        out.append(group)
    if atoms:
        raise Unsound("the mask is reshaped in a way that mixes its axes")
    return out


def _expr(x: object):
    """A size as a sympy expression; a size computed by a graph node (``x.shape[2]`` as a slice end) is
    that node's recorded value. A size the analysis cannot read is :class:`Unsound`, never a crash."""
    import sympy

    if isinstance(x, torch.fx.Node):
        value = node_val(x)
        if not isinstance(value, (int, torch.SymInt)):
            raise Unsound(f"a mask size is computed by {x.name}, whose value is not recorded")
        x = value
    if isinstance(x, torch.SymInt):
        return x.node.expr
    if isinstance(x, sympy.Expr):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        return sympy.Integer(x)
    raise Unsound(f"a mask size {x!r} is not a number")


def same_size(a: object, b: object) -> bool:
    """Whether two (symbolic) sizes are provably equal."""
    import sympy

    return sympy.expand(_expr(a) - _expr(b)) == 0


def _may_be_same(a: object, b: object) -> bool:
    """False only for two different constant sizes."""
    return not (isinstance(a, int) and isinstance(b, int) and a != b)


def _blocks(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value <= BLOCK


def _is_full_slice(node: torch.fx.Node) -> bool:
    """``x[:, :]``-style slices that keep every element (indexing with None and ``:``)."""
    if node.target is not aten.slice.Tensor or node_val(node.args[0]) is None:
        return False
    a = node_arguments(node)
    size = node_val(node.args[0]).shape[a["dim"]]
    end = a["end"]
    whole = end is None or (isinstance(end, int) and end >= 2**62) or same_size(end, size)
    return a["start"] in (None, 0) and a["step"] == 1 and whole


def _is_float(node: object) -> bool:
    val = node_val(node)
    return val is not None and val.dtype.is_floating_point


def _is_zeros(node: object) -> bool:
    if not isinstance(node, torch.fx.Node):
        return False
    if node.target in _ZEROS:
        return True
    return node.target in (aten.full.default, aten.full_like.default) and node.args[1] == 0


def _is_full(node: object, ok: Callable[[object], bool]) -> bool:
    if not isinstance(node, torch.fx.Node):
        return False
    if node.target is aten.ones.default:
        return ok(1)
    return node.target is aten.full.default and ok(node.args[1])


def _diagonal(node: torch.fx.Node) -> int:
    return node.args[1] if len(node.args) > 1 else node.kwargs.get("diagonal", 0)


def node_arguments(node: torch.fx.Node) -> dict[str, object]:
    """The node's arguments by schema name, defaults filled in."""
    schema = node.target._schema
    values = {a.name: a.default_value if a.has_default_value() else None for a in schema.arguments}
    values.update(zip((a.name for a in schema.arguments), node.args))
    values.update(node.kwargs)
    return values


def node_val(node: object) -> torch.Tensor | None:
    """The example value torch.export recorded for ``node`` (a fake tensor), or None."""
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None
