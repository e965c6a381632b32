"""The portable ONNX form of ``fastattn::Attention``: model-local functions in onnxscript.

Every attention becomes one node ``fastattn::Attention`` (domain ``fastattn``, version 1).
Its meaning is given by an ONNX function stored in the model, whose body uses standard
ops only, so the model runs on any ONNX Runtime with nothing of fastattn installed.

ONNX functions cannot test whether an optional input was given, so each combination of
optional inputs has its own body, selected by the node's ``overload`` (IR v10):

    overload      inputs
    ""            query, key, value
    "mask"        query, key, value, "", "", key_mask
    "past"        query, key, value, past_key, past_value
    "past_mask"   query, key, value, past_key, past_value, key_mask

All four call ``fastattn::AttentionCore`` (masked dense attention, grouped heads).
This body is correct for every attention kind and fast for none: lowering passes replace
it per execution provider. Hierarchical nodes (``block`` > 0) take the same four with the
prefix ``hierarchical`` (``hierarchical_past_mask``, ...), defined in
:mod:`.onnx_hierarchical`; models without such nodes carry none of them.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
import onnxscript
from onnx import defs
from onnxscript import opset18 as op

DOMAIN = "fastattn"
VERSION = 1
OP_TYPE = "Attention"
_fa = onnxscript.values.Opset(DOMAIN, VERSION)


@onnxscript.script(_fa, default_opset=op)
def AttentionCore(
    query, present_key, present_value, key_mask, num_heads: int, kv_num_heads: int,
    causal: int = 0, window: int = 0, global_tokens: int = 0, scale: float = 0.0,
):  # fmt: skip
    """(B,S,Hq*D) query over (B,Hkv,L,D) keys; key_mask broadcastable to (B,L), nonzero = attend."""
    zero = op.Constant(value_ints=[0])
    hkv = op.Unsqueeze(op.Constant(value_int=kv_num_heads), zero)
    group = op.Div(op.Unsqueeze(op.Constant(value_int=num_heads), zero), hkv)
    minus1 = op.Constant(value_ints=[-1])
    # query heads grouped by the key/value head they share: (B, Hkv, group, S, D)
    q = op.Transpose(op.Reshape(query, op.Concat(zero, zero, hkv, group, minus1, axis=0)), perm=[0, 2, 3, 1, 4])
    k = op.Unsqueeze(present_key, op.Constant(value_ints=[2]))  # (B, Hkv, 1, L, D)
    v = op.Unsqueeze(present_value, op.Constant(value_ints=[2]))
    head_size = op.Cast(op.Shape(q, start=4), to=1)
    attr_scale = op.Constant(value_float=scale)
    s = op.Where(op.Equal(attr_scale, op.Constant(value_float=0.0)), op.Reciprocal(op.Sqrt(head_size)), attr_scale)
    scores = op.Mul(op.MatMul(q, op.Transpose(k, perm=[0, 1, 2, 4, 3])), op.CastLike(s, query))
    # positions: keys 0..L-1; queries are the last S, L-S..L-1
    total = op.Squeeze(op.Shape(present_key, start=2, end=3))
    first = op.Sub(total, op.Squeeze(op.Shape(query, start=1, end=2)))
    one_i = op.Constant(value_int=1)
    kpos = op.Range(op.Constant(value_int=0), total, one_i)
    qpos = op.Unsqueeze(op.Range(first, total, one_i), op.Constant(value_ints=[1]))
    dist = op.Sub(qpos, kpos)  # (S, L)
    zero_i = op.Constant(value_int=0)
    w = op.Constant(value_int=window)
    g = op.Constant(value_int=global_tokens)
    causal_ok = op.Or(op.Equal(op.Constant(value_int=causal), zero_i), op.GreaterOrEqual(dist, zero_i))
    window_ok = op.Or(op.Equal(w, zero_i), op.Less(op.Abs(dist), w))
    global_ok = op.Or(op.Less(kpos, g), op.Less(qpos, g))
    keys_ok = op.Unsqueeze(op.Cast(key_mask, to=9), op.Constant(value_ints=[1, 2, 3]))  # (B, 1, 1, 1, L)
    ok = op.And(op.And(causal_ok, op.Or(window_ok, global_ok)), keys_ok)
    neg_inf = op.CastLike(op.Constant(value_float=float("-inf")), scores)
    probs = op.Softmax(op.Where(ok, scores, neg_inf), axis=-1)
    probs = op.Where(ok, probs, op.CastLike(op.Constant(value_float=0.0), probs))  # no visible key -> 0
    out = op.Transpose(op.MatMul(probs, v), perm=[0, 3, 1, 2, 4])  # (B, S, Hkv, group, Dv)
    return op.Reshape(out, op.Concat(zero, zero, minus1, axis=0))


@onnxscript.script(_fa, default_opset=op)
def _split_heads(x, heads: int):
    """(B, T, H*D) -> (B, H, T, D)."""
    zero = op.Constant(value_ints=[0])
    shape = op.Concat(zero, zero, op.Unsqueeze(op.Constant(value_int=heads), zero), op.Constant(value_ints=[-1]), axis=0)
    return op.Transpose(op.Reshape(x, shape), perm=[0, 2, 1, 3])


@onnxscript.script(_fa, default_opset=op)
def Attention(
    query, key, value, num_heads: int, kv_num_heads: int,
    causal: int = 0, window: int = 0, global_tokens: int = 0, scale: float = 0.0,
):  # fmt: skip
    present_key = _split_heads(key, heads=kv_num_heads)
    present_value = _split_heads(value, heads=kv_num_heads)
    output = AttentionCore(
        query, present_key, present_value, op.Constant(value_ints=[1]), num_heads=num_heads,
        kv_num_heads=kv_num_heads, causal=causal, window=window, global_tokens=global_tokens, scale=scale,
    )  # fmt: skip
    return output, present_key, present_value


@onnxscript.script(_fa, default_opset=op)
def Attention_mask(
    query, key, value, past_key, past_value, key_mask, num_heads: int, kv_num_heads: int,
    causal: int = 0, window: int = 0, global_tokens: int = 0, scale: float = 0.0,
):  # fmt: skip
    present_key = _split_heads(key, heads=kv_num_heads)
    present_value = _split_heads(value, heads=kv_num_heads)
    output = AttentionCore(
        query, present_key, present_value, key_mask, num_heads=num_heads,
        kv_num_heads=kv_num_heads, causal=causal, window=window, global_tokens=global_tokens, scale=scale,
    )  # fmt: skip
    return output, present_key, present_value


@onnxscript.script(_fa, default_opset=op)
def Attention_past(
    query, key, value, past_key, past_value, num_heads: int, kv_num_heads: int,
    causal: int = 0, window: int = 0, global_tokens: int = 0, scale: float = 0.0,
):  # fmt: skip
    present_key = op.Concat(past_key, _split_heads(key, heads=kv_num_heads), axis=2)
    present_value = op.Concat(past_value, _split_heads(value, heads=kv_num_heads), axis=2)
    output = AttentionCore(
        query, present_key, present_value, op.Constant(value_ints=[1]), num_heads=num_heads,
        kv_num_heads=kv_num_heads, causal=causal, window=window, global_tokens=global_tokens, scale=scale,
    )  # fmt: skip
    return output, present_key, present_value


@onnxscript.script(_fa, default_opset=op)
def Attention_past_mask(
    query, key, value, past_key, past_value, key_mask, num_heads: int, kv_num_heads: int,
    causal: int = 0, window: int = 0, global_tokens: int = 0, scale: float = 0.0,
):  # fmt: skip
    present_key = op.Concat(past_key, _split_heads(key, heads=kv_num_heads), axis=2)
    present_value = op.Concat(past_value, _split_heads(value, heads=kv_num_heads), axis=2)
    output = AttentionCore(
        query, present_key, present_value, key_mask, num_heads=num_heads,
        kv_num_heads=kv_num_heads, causal=causal, window=window, global_tokens=global_tokens, scale=scale,
    )  # fmt: skip
    return output, present_key, present_value


# overload -> body; the helpers every body calls
OVERLOADS = {"": Attention, "mask": Attention_mask, "past": Attention_past, "past_mask": Attention_past_mask}
_HELPERS = (AttentionCore, _split_heads)


def overload_for(has_past: bool, has_mask: bool, hierarchical: bool = False) -> str:
    parts = (("hierarchical", hierarchical), ("past", has_past), ("mask", has_mask))
    return "_".join(name for name, present in parts if present)


def function_protos(overloads: set[str] | None = None) -> list[onnx.FunctionProto]:
    """FunctionProtos defining ``fastattn::Attention`` (the given overloads, default all) and their helpers."""
    from fastattn.attention import onnx_hierarchical as hier  # noqa: PLC0415  (it builds on this module)

    protos = []
    helpers = list(_HELPERS)
    for table, extra in ((OVERLOADS, ()), (hier.OVERLOADS, hier.HELPERS)):
        chosen = [(o, fn) for o, fn in table.items() if overloads is None or o in overloads]
        for overload, fn in chosen:
            proto = fn.to_function_proto()
            proto.name, proto.overload = OP_TYPE, overload
            protos.append(proto)
        if chosen:
            helpers += extra
    return protos + [fn.to_function_proto() for fn in helpers]


def attach_functions(model: ir.Model) -> int:
    """Select each ``fastattn::Attention`` node's overload and add the function bodies it needs.

    Returns the number of attention nodes. Idempotent.
    """
    used: set[str] = set()
    count = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            continue
        inputs = list(node.inputs) + [None] * (6 - len(node.inputs))
        block = node.attributes.get("block")
        node.overload = overload_for(inputs[3] is not None, inputs[5] is not None, bool(block and block.value))
        used.add(node.overload)
        count += 1
    if count:
        opset = model.opset_imports.setdefault("", 18)
        for proto in function_protos(used):
            fn = ir.serde.deserialize_function(proto)
            fn.opset_imports[""] = opset  # the bodies use ops unchanged from opset 18 on
            model.functions[fn.identifier()] = fn
        model.opset_imports.setdefault(DOMAIN, VERSION)
        model.ir_version = max(model.ir_version or 0, 10)  # overloads need IR v10
    return count


def register_schema() -> None:
    """Register the op's schema with onnx (torch's exporter evaluates only ops it has a schema for)."""
    if defs.has(OP_TYPE, VERSION, DOMAIN):
        return
    param = defs.OpSchema.FormalParameter
    optional = defs.OpSchema.FormalParameterOption.Optional
    attr = defs.OpSchema.Attribute
    INT = defs.OpSchema.AttrType.INT
    schema = defs.OpSchema(
        OP_TYPE, DOMAIN, VERSION,
        doc="Attention with causal, sliding-window and global-token masks; see fastattn docs/attention_op.md",
        inputs=[
            param("query", "T"), param("key", "T"), param("value", "T"),
            param("past_key", "T", param_option=optional), param("past_value", "T", param_option=optional),
            param("key_mask", "M", param_option=optional),
        ],
        outputs=[param("output", "T"), param("present_key", "T"), param("present_value", "T")],
        type_constraints=[
            ("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "activations"),
            ("M", ["tensor(int64)", "tensor(int32)", "tensor(bool)"], "key mask, nonzero = attend"),
        ],
        attributes=[
            attr("num_heads", INT, "query heads"),
            attr("kv_num_heads", INT, "key/value heads; divides num_heads"),
            attr("causal", onnx.helper.make_attribute("causal", 0), "query p sees keys j <= p"),
            attr("window", onnx.helper.make_attribute("window", 0), "keys with |p - j| < window; 0 = unbounded"),
            attr("global_tokens", onnx.helper.make_attribute("global_tokens", 0), "leading tokens seen by and seeing all"),
            attr("scale", onnx.helper.make_attribute("scale", 0.0), "score scale; 0 = 1/sqrt(head_size)"),
            attr("block", onnx.helper.make_attribute("block", 0),
                 "hierarchical: own block + one summary per earlier (other) block; 0 = off"),
        ],
    )  # fmt: skip
    defs.register_schema(schema)


def translate(
    query, key, value, past_key=None, past_value=None, key_mask=None,
    num_heads=1, kv_num_heads=1, causal=False, window=0, global_tokens=0, scale=0.0, block=0,
):  # fmt: skip
    """torch.onnx ``custom_translation_table`` entry for ``torch.ops.fastattn.attention``."""
    if block:  # only hierarchical nodes carry the attribute: other exports stay as they were
        return _fa.Attention(
            query, key, value, past_key, past_value, key_mask, num_heads=num_heads, kv_num_heads=kv_num_heads,
            causal=int(causal), scale=float(scale), block=block,
        )  # fmt: skip
    return _fa.Attention(
        query, key, value, past_key, past_value, key_mask, num_heads=num_heads, kv_num_heads=kv_num_heads,
        causal=int(causal), window=window, global_tokens=global_tokens, scale=float(scale),
    )  # fmt: skip
