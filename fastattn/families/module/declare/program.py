"""The program route: an FX rewrite of an ExportedProgram's attention calls into the fastattn op.

Each attention node (``aten.scaled_dot_product_attention``, the fused fast-path ops
``aten._transformer_encoder_layer_fwd`` / ``aten._native_multi_head_attention``) gets a
plan: a :class:`Replacement` function computing the same with the fastattn op, or the
reason it stays. Masks must be proven key-padding and/or causal (:mod:`.masks`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastattn.attention.op import ATTENTION_OP, attention
from fastattn.attention.spec import AttentionSpec
from fastattn.errors import ExportError
from fastattn.families.graphs import GraphDef, mha_fastpath
from fastattn.families.module.declare.masks import Unsound, analyse_mask, node_arguments, node_val, same_size
from fastattn.families.module.declare.result import DeclareResult, first_line


def script_to_program(module: torch.jit.ScriptModule, sample_args: tuple) -> torch.export.ExportedProgram:
    """A TorchScript module as an ExportedProgram, through torch's TorchScript converter."""
    from torch._export.converter import TS2EPConverter  # private, but the only converter torch has

    try:
        with mha_fastpath(False):
            return TS2EPConverter(module, sample_args).convert()
    except Exception as e:  # the converter raises RuntimeError/AssertionError on unsupported constructs
        raise ExportError(
            f"the TorchScript model could not be converted to an ExportedProgram: {first_line(e)}",
            "save it with torch.jit.trace rather than torch.jit.script, "
            "or better with torch.export.save (.pt2)",
        ) from e


def declare_program(
    program: torch.export.ExportedProgram, graph: GraphDef, sample_args: tuple
) -> DeclareResult:
    """Rewrite the program's attention calls into the fastattn op, then re-export it.

    The rewrite happens on the unlifted module (:func:`rewrite_attention`); re-exporting it
    traces the replacement functions into ATen ops plus ``fastattn.attention``, with the named
    dims of ``graph.inputs`` dynamic. Attention ops already in the program count as declared.
    """
    module = program.module()
    existing = sum(1 for n in module.graph.nodes if n.target is ATTENTION_OP)
    rewritten, reasons = rewrite_attention(module)
    if not rewritten:
        return DeclareResult(program, existing, reasons)
    dims = tuple(
        {a: torch.export.Dim.DYNAMIC for a, d in enumerate(s.shape) if isinstance(d, str)} or None
        for s in graph.inputs
    )
    try:
        new = torch.export.export(module, sample_args, dynamic_shapes=dims)
    except Exception as e:  # re-tracing can fail where the first trace did not (specialised dims, ...)
        raise ExportError(
            f"re-exporting the program with declared attention failed: {first_line(e)}",
            "check that the --input dims agree with the program's own (static?) shapes",
        ) from e
    return DeclareResult(new, existing + rewritten, reasons)


@dataclass(frozen=True)
class Replacement:
    """A call that replaces an attention node; re-export traces ``function`` into ATen + fastattn ops."""

    function: Callable[..., object]
    args: tuple
    kwargs: dict


Rule = Callable[[torch.fx.Node], "Replacement | str"]  # a str explains why the node stays


def rewrite_attention(module: torch.fx.GraphModule) -> tuple[int, list[str]]:
    """Replace each attention node a rule accepts; returns the count and, per rejected node, why."""
    rules: dict[object, Rule] = {
        torch.ops.aten.scaled_dot_product_attention.default: plan_sdpa,
        torch.ops.aten._transformer_encoder_layer_fwd.default: plan_encoder_layer,
        torch.ops.aten._native_multi_head_attention.default: plan_native_mha,
    }
    plans = [(node, rules[node.target](node)) for node in module.graph.nodes if node.target in rules]
    reasons = [f"{_where(node)}: {plan}" for node, plan in plans if isinstance(plan, str)]
    replaced: dict[torch.fx.Node, torch.fx.Node] = {}  # planned on the original nodes, which later plans use
    for node, plan in plans:
        if isinstance(plan, str):
            continue
        args, kwargs = torch.fx.node.map_arg((plan.args, plan.kwargs), lambda n: replaced.get(n, n))
        with module.graph.inserting_before(node):
            replaced[node] = module.graph.call_function(plan.function, args, kwargs)
        node.replace_all_uses_with(replaced[node])
        module.graph.erase_node(node)
    if replaced:
        module.graph.eliminate_dead_code()
        module.recompile()
    return len(replaced), reasons


def _where(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    path = list(stack.values())[-1][0] if stack else ""
    return f"{path} ({node.name})" if path else node.name


# --- scaled_dot_product_attention


def plan_sdpa(node: torch.fx.Node) -> Replacement | str:
    """``aten.scaled_dot_product_attention`` (q, k, v as (B, H, S, D)) -> fastattn op, when sound."""
    a = node_arguments(node)
    q, k, v = (node_val(a[n]) for n in ("query", "key", "value"))
    if q is None or k is None or v is None or not q.dim() == k.dim() == v.dim() == 4:
        return "query/key/value are not (batch, heads, sequence, head_size)"
    heads, kv_heads = q.shape[1], k.shape[1]
    if not isinstance(heads, int) or not isinstance(kv_heads, int) or v.shape[1] != kv_heads:
        return "the number of heads is not a constant"
    if heads != kv_heads and not (a["enable_gqa"] and heads % kv_heads == 0):
        return f"{heads} query heads over {kv_heads} key heads without enable_gqa"
    if a["dropout_p"]:
        return f"dropout_p={a['dropout_p']} (attention in training mode)"
    causal, masks = bool(a["is_causal"]), []
    if a["attn_mask"] is not None:
        if causal:
            return "both attn_mask and is_causal are set"
        try:
            causal, masks = analyse_mask(a["attn_mask"], q.shape[0], q.shape[2], k.shape[2])
        except Unsound as e:
            return str(e)
    if causal and not same_size(q.shape[2], k.shape[2]):
        return "causal attention with query length != key length (PyTorch aligns it top-left)"
    kwargs = {
        **_mask_kwargs(masks),
        "num_heads": heads,
        "kv_num_heads": kv_heads,
        "causal": causal,
        "scale": float(a["scale"] or 0.0),
    }
    return Replacement(_sdpa_via_fastattn, (a["query"], a["key"], a["value"]), kwargs)


def _sdpa_via_fastattn(query, key, value, masks, negate, num_heads, kv_num_heads, causal, scale):
    """SDPA on (B, H, S, D) tensors, computed by the fastattn op on packed (B, S, H·D) ones."""
    key_mask = _key_mask(masks, negate, query.shape[0], key.shape[2])
    spec = AttentionSpec(num_heads, kv_num_heads, causal, scale=scale)
    out, _ = attention(_pack(query), _pack(key), _pack(value), spec, key_mask=key_mask)
    return out.unflatten(2, (num_heads, -1)).transpose(1, 2)


def _pack(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(2)


def _key_mask(masks: list[torch.Tensor], negate: tuple[bool, ...], batch, key_len) -> torch.Tensor | None:
    """AND of (B, L) bool masks (each negated where asked), broadcast to (batch, key_len): True = attend."""
    keep = None
    for mask, neg in zip(masks, negate):
        m = mask.logical_not() if neg else mask.to(torch.bool)
        keep = m if keep is None else keep & m
    return None if keep is None else keep.expand(batch, key_len)


# --- fused fast-path ops (TorchScript traced with the MHA fast path on)


def plan_encoder_layer(node: torch.fx.Node) -> Replacement | str:
    """``aten._transformer_encoder_layer_fwd`` (no mask or key padding) -> that layer, fastattn inside."""
    a = node_arguments(node)
    src = node_val(a["src"])
    masks = _fused_key_mask(a, src.shape[0], src.shape[1]) if src is not None else "no shape information"
    if isinstance(masks, str):
        return masks
    names = [arg.name for arg in node.target._schema.arguments if arg.name not in ("mask", "mask_type")]
    return Replacement(_encoder_layer_via_fastattn, tuple(a[n] for n in names), _mask_kwargs(masks))


def _fused_key_mask(
    a: dict[str, object], batch: object, key_len: object
) -> list[tuple[torch.fx.Node, bool]] | str:
    """The key masks of a fused fast-path op: none, or a proven (B, L) key-padding mask (mask_type 1)."""
    if a["mask"] is None:
        return []
    if a["mask_type"] != 1:
        return (
            f"fused attention with a mask of type {a['mask_type']} (only key padding, type 1, is supported)"
        )
    try:
        _, masks = analyse_mask(a["mask"], batch, key_len, key_len, rank=2)
    except Unsound as e:
        return str(e)
    return masks


def _mask_kwargs(masks: list[tuple[torch.fx.Node, bool]]) -> dict[str, object]:
    return {"masks": [m for m, _ in masks], "negate": tuple(n for _, n in masks)}


def _encoder_layer_via_fastattn(
    src,
    embed_dim,
    num_heads,
    qkv_weight,
    qkv_bias,
    proj_weight,
    proj_bias,
    use_gelu,
    norm_first,
    eps,
    norm_weight_1,
    norm_bias_1,
    norm_weight_2,
    norm_bias_2,
    ffn_weight_1,
    ffn_bias_1,
    ffn_weight_2,
    ffn_bias_2,
    masks=(),
    negate=(),
):
    """nn.TransformerEncoderLayer (batch first, eval) as its fast path computes it."""
    key_mask = _key_mask(masks, negate, src.shape[0], src.shape[1])

    def self_attention(x):
        q, k, v = F.linear(x, qkv_weight, qkv_bias).chunk(3, dim=-1)
        out, _ = attention(q, k, v, AttentionSpec(num_heads, num_heads), key_mask=key_mask)
        return F.linear(out, proj_weight, proj_bias)

    def feed_forward(x):
        hidden = F.linear(x, ffn_weight_1, ffn_bias_1)
        return F.linear(F.gelu(hidden) if use_gelu else F.relu(hidden), ffn_weight_2, ffn_bias_2)

    def norm1(x):
        return F.layer_norm(x, (embed_dim,), norm_weight_1, norm_bias_1, eps)

    def norm2(x):
        return F.layer_norm(x, (embed_dim,), norm_weight_2, norm_bias_2, eps)

    if norm_first:
        x = src + self_attention(norm1(src))
        return x + feed_forward(norm2(x))
    x = norm1(src + self_attention(src))
    return norm2(x + feed_forward(x))


def plan_native_mha(node: torch.fx.Node) -> Replacement | str:
    """``aten._native_multi_head_attention`` (no mask or key padding; weights unused) -> the fastattn op."""
    a = node_arguments(node)
    if any(user.args[1] == 1 for user in node.users if user.users):
        return "its attention weights are used (need_weights=True)"
    query, key = node_val(a["query"]), node_val(a["key"])
    if query is None or key is None or query.dim() != 3:
        return "query/key are not (batch, sequence, embed)"
    masks = _fused_key_mask(a, query.shape[0], key.shape[1])
    if isinstance(masks, str):
        return masks
    args = tuple(
        a[n]
        for n in ("query", "key", "value", "num_head", "qkv_weight", "qkv_bias", "proj_weight", "proj_bias")
    )
    return Replacement(_native_mha_via_fastattn, args, _mask_kwargs(masks))


def _native_mha_via_fastattn(
    query, key, value, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, masks=(), negate=()
):
    """nn.MultiheadAttention's fast path (batch first, eval, no weights) with the fastattn op."""
    (wq, wk, wv), (bq, bk, bv) = qkv_weight.chunk(3), qkv_bias.chunk(3)
    q, k, v = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
    out, _ = attention(
        q,
        k,
        v,
        AttentionSpec(num_heads, num_heads),
        key_mask=_key_mask(masks, negate, query.shape[0], key.shape[1]),
    )
    out = F.linear(out, proj_weight, proj_bias)
    return out, out.new_empty(0)
