"""Foreign attention reaches ONNX as ``fastattn::Attention``: nn.MultiheadAttention, .pt2 and TorchScript.

Every export is checked three ways: the exact number of fastattn nodes, no Softmax left in
the main graph (unless an attention was rightly left decomposed), and ONNX Runtime against
PyTorch at dim sizes other than the traced ones.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastattn.errors import ExportError
from fastattn.exporter.capture import capture
from fastattn.families.graphs import GraphDef
from fastattn.families.load import LoadedModel, ModelFormat
from fastattn.families.module.declare import (
    DeclaredMultiheadAttention,
    DeclareResult,
    classify_masks,
    declare,
    rewrite_attention,
)
from fastattn.families.module.input_spec import foreign_graph, parse_input_specs

TOL = 1e-4
pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::UserWarning")


@dataclass
class Exported:
    graph: GraphDef  # as declared
    result: DeclareResult
    model: ir.Model
    reference: nn.Module  # the original model, run eagerly

    def ops(self) -> collections.Counter:
        return collections.Counter((n.domain, n.op_type) for n in self.model.graph)

    def max_error(self, bump: int = 3, seed: int = 1) -> float:
        """Largest |ORT - PyTorch| at every dim traced size + ``bump``, with padded masks."""
        sizes = {d: s + bump for d, s in self.graph.sizes().items()}
        args = self.graph.sample(sizes, seed=seed, padded=True)
        with torch.no_grad():
            want = self.reference(*args)
        session = ort.InferenceSession(
            ir.to_proto(self.model).SerializeToString(), providers=["CPUExecutionProvider"]
        )
        got = session.run(None, {s.name: a.numpy() for s, a in zip(self.graph.inputs, args, strict=True)})
        wants = want if isinstance(want, tuple) else (want,)
        return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, wants, strict=True))


def export(
    module, inputs: list[str], form=ModelFormat.PICKLED_MODULE, reference=None, strict=True
) -> Exported:
    graph = foreign_graph(LoadedModel(form, Path("model.pt"), module), parse_input_specs(inputs))
    declared, result = declare(graph, strict=strict)
    return Exported(declared, result, capture(declared), reference if reference is not None else module)


def attention_nodes(exported: Exported) -> int:
    return exported.ops()[("fastattn", "Attention")]


def softmaxes(exported: Exported) -> int:
    return exported.ops()[("", "Softmax")]


# ------------------------------------------------------------------ nn.Module route


class CausalTransformer(nn.Module):
    """nn.Transformer called the usual way: a causal tgt_mask, padded source keys."""

    def __init__(self, batch_first: bool):
        super().__init__()
        torch.manual_seed(0)
        self.t = nn.Transformer(16, 2, 2, 2, 32, dropout=0.0, batch_first=batch_first)

    def forward(self, src, tgt, keep):
        tgt_mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1 if self.t.batch_first else 0))
        pad = keep == 0
        return self.t(src, tgt, tgt_mask=tgt_mask, src_key_padding_mask=pad, memory_key_padding_mask=pad)


@pytest.fixture(scope="module")
def transformer_bf():
    inputs = ["src:batch,src_len,16:float32", "tgt:batch,tgt_len,16:float32", "keep:batch,src_len:int64:mask"]
    return export(CausalTransformer(True).eval(), inputs)


@pytest.fixture(scope="module")
def transformer_sf():
    inputs = ["src:src_len,batch,16:float32", "tgt:tgt_len,batch,16:float32", "keep:batch,src_len:int64:mask"]
    return export(CausalTransformer(False).eval(), inputs)


@pytest.mark.parametrize("name", ["transformer_bf", "transformer_sf"])
def test_transformer_every_attention_is_one_node(name, request):
    exported = request.getfixturevalue(name)
    assert exported.result.declared == 6 and exported.result.reasons == []
    assert attention_nodes(exported) == 6 and softmaxes(exported) == 0
    assert exported.max_error() < TOL


def test_transformer_decoder_self_attention_is_causal(transformer_bf):
    nodes = [n for n in transformer_bf.model.graph if n.op_type == "Attention"]
    causal = [n.attributes["causal"].as_int() for n in nodes]
    assert sorted(causal) == [0, 0, 0, 0, 1, 1]  # 2 encoder + 2 cross: full; 2 decoder self: causal
    assert sum(n.overload == "mask" for n in nodes) == 4  # encoder self and cross attention see the padding


def test_declared_copy_shares_parameters_and_leaves_the_original_alone(transformer_bf):
    original = transformer_bf.reference.t.decoder.layers[1].multihead_attn
    declared = transformer_bf.result.module.t.decoder.layers[1].multihead_attn
    assert type(original) is nn.MultiheadAttention and isinstance(declared, DeclaredMultiheadAttention)
    assert (
        declared.in_proj_weight is original.in_proj_weight
        and declared.out_proj.weight is original.out_proj.weight
    )
    assert (
        declared.causal is False and transformer_bf.result.module.t.decoder.layers[0].self_attn.causal is True
    )


class PaddedEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.e = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0), 2)

    def forward(self, x, keep):  # sequence first; padding as a bool key_padding_mask
        return self.e(x, src_key_padding_mask=keep == 0)


@pytest.fixture(scope="module")
def padded_encoder():
    return export(PaddedEncoder().eval(), ["x:seq,batch,16:float32", "keep:batch,seq:int64:mask"])


def test_encoder_key_padding_mask_is_a_graph_input(padded_encoder):
    assert padded_encoder.result.declared == 2 and attention_nodes(padded_encoder) == 2
    assert softmaxes(padded_encoder) == 0
    assert all(n.overload == "mask" for n in padded_encoder.model.graph if n.op_type == "Attention")
    assert padded_encoder.max_error() < TOL


class Cross(nn.Module):
    """Bare cross-attention with its own key/value widths (q/k/v_proj_weight), sequence first."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.attn = nn.MultiheadAttention(16, 4, kdim=12, vdim=10)

    def forward(self, query, key, value):
        return self.attn(query, key, value)[0]  # need_weights defaults to True; the weights are unused


def test_bare_cross_attention():
    exported = export(
        Cross().eval(), ["q:tgt,batch,16:float32", "k:mem,batch,12:float32", "v:mem,batch,10:float32"]
    )
    assert exported.result.declared == 1 and attention_nodes(exported) == 1 and softmaxes(exported) == 0
    assert exported.max_error() < TOL


class Biased(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        torch.manual_seed(0)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True, **kwargs)

    def forward(self, x):
        bias = x.new_ones(x.shape[1], x.shape[1]).tril() / 2  # neither empty nor causal
        return self.attn(x, x, x, attn_mask=bias, need_weights=False)[0]


def test_arbitrary_mask_is_an_error_naming_the_module_and_the_fix():
    with pytest.raises(ExportError) as e:
        export(Biased().eval(), ["x:batch,seq,16:float32"])
    message = str(e.value)
    assert message.startswith("attention attn: attn_mask adds a bias (values other than 0 and -inf)")
    assert "generate_square_subsequent_mask" in message and "strict=False" in message


def test_arbitrary_mask_not_strict_stays_decomposed_and_correct():
    exported = export(Biased().eval(), ["x:batch,seq,16:float32"], strict=False)
    assert exported.result.declared == 0
    assert exported.result.reasons == ["attn: attn_mask adds a bias (values other than 0 and -inf)"]
    assert attention_nodes(exported) == 0 and softmaxes(exported) == 1
    assert exported.max_error() < TOL


@pytest.mark.parametrize(
    "kwargs, words",
    [({"add_bias_kv": True}, "add_bias_kv=True"), ({"add_zero_attn": True}, "add_zero_attn=True")],
)
def test_bias_kv_and_zero_attn_are_refused(kwargs, words):
    graph = foreign_graph(
        LoadedModel(ModelFormat.PICKLED_MODULE, Path("m.pt"), Biased(**kwargs).eval()),
        parse_input_specs(["x:batch,seq,16:float32"]),
    )
    with pytest.raises(ExportError, match=f"attention attn: {words}"):
        declare(graph)


class UsesWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):
        out, weights = self.attn(x, x, x)
        return out * weights.mean()


def test_model_using_attention_weights_is_refused():
    graph = foreign_graph(
        LoadedModel(ModelFormat.PICKLED_MODULE, Path("m.pt"), UsesWeights().eval()),
        parse_input_specs(["x:batch,seq,16:float32"]),
    )
    with pytest.raises(ExportError, match="need_weights=True cannot be declared"):
        declare(graph)


@pytest.mark.parametrize(
    "mask, is_causal, want",
    [
        (None, False, (False, None)),
        (None, True, (True, None)),
        (nn.Transformer.generate_square_subsequent_mask(5), False, (True, None)),
        (torch.ones(5, 5, dtype=torch.bool).triu(1), False, (True, None)),
        (torch.ones(5, 5, dtype=torch.bool).triu(1).expand(4, 5, 5), False, (True, None)),  # (N·H, L, S)
        (torch.zeros(5, 5), False, (False, None)),
        (torch.ones(5, 5, dtype=torch.bool).triu(2), False, (False, "attn_mask is neither empty nor causal")),
        (
            torch.ones(5, 5, dtype=torch.bool).tril(-1),
            False,
            (False, "attn_mask is neither empty nor causal"),
        ),
        (torch.full((5, 5), 0.5), False, (False, "attn_mask adds a bias (values other than 0 and -inf)")),
    ],
)
def test_classify_masks(mask, is_causal, want):
    assert classify_masks(mask, is_causal, None, 5, 5) == want


def test_classify_non_square_causal_and_padding_bias():
    assert classify_masks(None, True, None, 3, 5)[1].startswith(
        "causal attention with query length != key length"
    )
    assert classify_masks(None, False, torch.tensor([[0.0, float("-inf")]]), 2, 2) == (False, None)
    assert classify_masks(None, False, torch.tensor([[0.0, -1.0]]), 2, 2)[1].startswith(
        "key_padding_mask adds a bias"
    )


def test_declared_module_checks_later_eager_calls(transformer_bf):
    attn = transformer_bf.result.module.t.encoder.layers[0].self_attn
    x = torch.randn(2, 4, 16)
    with pytest.raises(ExportError, match="declared unmasked but is now called with a causal mask"):
        attn(x, x, x, attn_mask=nn.Transformer.generate_square_subsequent_mask(4))


# ------------------------------------------------------------------ program route (.pt2, TorchScript)

B, S, T = (torch.export.Dim(n, min=2) for n in ("b", "s", "t"))


def _encoder(layers: int = 2) -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()


class Padded(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x, keep):
        return self.inner(x, src_key_padding_mask=keep == 0)


class NoFastPath:
    def __enter__(self):
        self.before = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)

    def __exit__(self, *exc):
        torch.backends.mha.set_fastpath_enabled(self.before)


@pytest.fixture(scope="module")
def program_padded():
    model = Padded(_encoder()).eval()
    with NoFastPath():
        program = torch.export.export(
            model,
            (torch.randn(2, 9, 16), torch.ones(2, 9, dtype=torch.long)),
            dynamic_shapes=({0: B, 1: S}, {0: B, 1: S}),
        )
    return export(
        program, ["x:batch,seq,16:float32", "keep:batch,seq:int64:mask"], ModelFormat.EXPORTED_PROGRAM, model
    )


def test_program_padding_mask_is_proven_and_declared(program_padded):
    assert program_padded.result.declared == 2 and program_padded.result.reasons == []
    assert attention_nodes(program_padded) == 2 and softmaxes(program_padded) == 0
    assert program_padded.max_error() < TOL


class ProgramTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.t = nn.Transformer(16, 2, 1, 1, 32, dropout=0.0, batch_first=True)

    def forward(self, src, tgt):  # tgt_is_causal=False: torch.export cannot decide it from the mask's values
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1))
        return self.t(src, tgt, tgt_mask=mask, tgt_is_causal=False)


def test_program_causal_triu_mask_is_proven_and_declared():
    model = ProgramTransformer().eval()
    with NoFastPath():
        program = torch.export.export(
            model, (torch.randn(2, 9, 16), torch.randn(2, 7, 16)), dynamic_shapes=({0: B, 1: S}, {0: B, 1: T})
        )
    exported = export(
        program,
        ["src:batch,src_len,16:float32", "tgt:batch,tgt_len,16:float32"],
        ModelFormat.EXPORTED_PROGRAM,
        model,
    )
    assert exported.result.declared == 3 and attention_nodes(exported) == 3 and softmaxes(exported) == 0
    assert sorted(
        n.attributes["causal"].as_int() for n in exported.model.graph if n.op_type == "Attention"
    ) == [0, 0, 1]
    assert exported.max_error() < TOL


class InputMask(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x, bias):
        return self.attn(x, x, x, attn_mask=bias, need_weights=False)[0]


def test_program_arbitrary_mask_stays_decomposed_with_its_reason():
    model = InputMask().eval()
    program = torch.export.export(
        model, (torch.randn(2, 9, 16), torch.randn(9, 9)), dynamic_shapes=({0: B, 1: S}, {0: S, 1: S})
    )
    exported = export(
        program, ["x:batch,seq,16:float32", "bias:seq,seq:float32"], ModelFormat.EXPORTED_PROGRAM, model
    )
    assert exported.result.declared == 0 and attention_nodes(exported) == 0 and softmaxes(exported) == 1
    assert exported.result.reasons == [
        "attn (scaled_dot_product_attention): the mask is the input 'bias', which may hold any values"
    ]
    assert exported.max_error() < TOL


class Sdpa(nn.Module):
    """Plain SDPA with a (B, L) bool mask broadcast in a given way."""

    def __init__(self, index):
        super().__init__()
        self.index = index

    def forward(self, q, k, v, keep):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep.bool()[self.index])


@pytest.mark.parametrize(
    "index, reason",
    [
        ((slice(None), None, None, slice(None)), None),  # (B, 1, 1, L): a key mask
        (
            (slice(None), None, slice(None), None),
            "a key-padding mask is laid out on attention axis 2",
        ),  # on queries
    ],
    ids=["keys", "queries"],
)
def test_mask_analysis_proves_or_refuses(index, reason):
    qkv = [torch.randn(2, 2, 6, 4) for _ in range(3)]
    dims = ({0: B, 2: S},) * 3 + ({0: B, 1: S},)
    program = torch.export.export(Sdpa(index), (*qkv, torch.ones(2, 6)), dynamic_shapes=dims)
    module = program.module()
    count, reasons = rewrite_attention(module)
    assert (count, len(reasons)) == ((1, 0) if reason is None else (0, 1))
    assert reason is None or reasons[0].split(": ", 1)[1].startswith(reason)
    if reason is None:  # the rewritten graph computes the same
        args = ([torch.randn(3, 2, 5, 4) for _ in range(3)], torch.tensor([[1.0, 1, 0, 1, 1]] * 3))
        assert torch.allclose(module(*args[0], args[1]), Sdpa(index)(*args[0], args[1]), atol=1e-6)


@pytest.fixture(scope="module")
def traced_fastpath():
    """TorchScript traced the way users do (eval, no_grad, fast path on): fused encoder-layer ops."""
    model = Padded(_encoder()).eval()
    with torch.no_grad():
        script = torch.jit.trace(
            model, (torch.randn(2, 9, 16), torch.ones(2, 9, dtype=torch.long)), check_trace=False
        )
    assert "aten::_transformer_encoder_layer_fwd" in str(script.inlined_graph)
    return export(
        script, ["x:batch,seq,16:float32", "keep:batch,seq:int64:mask"], ModelFormat.TORCHSCRIPT, model
    )


def test_torchscript_fused_layers_are_declared(traced_fastpath):
    assert traced_fastpath.result.declared == 2 and attention_nodes(traced_fastpath) == 2
    assert softmaxes(traced_fastpath) == 0
    assert traced_fastpath.max_error() < TOL


def test_torchscript_sdpa_is_declared():
    model = _encoder(1)
    with NoFastPath():
        script = torch.jit.trace(model, (torch.randn(2, 9, 16),), check_trace=False)
    exported = export(script, ["x:batch,seq,16:float32"], ModelFormat.TORCHSCRIPT, model)
    assert exported.result.declared == 1 and attention_nodes(exported) == 1 and softmaxes(exported) == 0
    assert exported.max_error() < TOL


def test_scripted_torchscript_is_refused_with_a_fix():
    graph = foreign_graph(
        LoadedModel(ModelFormat.TORCHSCRIPT, Path("m.pt"), torch.jit.script(_encoder(1))),
        parse_input_specs(["x:batch,seq,16:float32"]),
    )
    with pytest.raises(ExportError, match="could not be converted to an ExportedProgram.*torch.jit.trace"):
        declare(graph)


class WrittenAfter(nn.Module):
    """A padding mask built properly, then partly overwritten in place before attention."""

    def forward(self, q, k, v, keep):
        mask = torch.zeros_like(keep).masked_fill_(keep == 0, float("-inf"))
        view = mask[:, None, None, :]
        mask[:, 0] = 0.0  # unblocks key 0 for every row: no longer the mask the source says
        return F.scaled_dot_product_attention(q, k, v, attn_mask=view)


def test_mask_written_in_place_is_refused():
    qkv = [torch.randn(2, 2, 6, 4) for _ in range(3)]
    dims = ({0: B, 2: S},) * 3 + ({0: B, 1: S},)
    program = torch.export.export(WrittenAfter(), (*qkv, torch.ones(2, 6)), dynamic_shapes=dims)
    count, reasons = rewrite_attention(program.module())
    assert count == 0 and "modified in place" in reasons[0]


@pytest.mark.parametrize("activation, norm_first", [("gelu", True), ("relu", False)])
def test_fused_encoder_layer_rewrite_keeps_the_layer_semantics(activation, norm_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        16, 2, 32, 0.0, activation, batch_first=True, norm_first=norm_first
    ).eval()
    with torch.no_grad():
        script = torch.jit.trace(layer, (torch.randn(2, 9, 16),), check_trace=False)
    graph = foreign_graph(
        LoadedModel(ModelFormat.TORCHSCRIPT, Path("m.pt"), script), parse_input_specs(["x:b,s,16:float32"])
    )
    _, result = declare(graph)
    x = torch.randn(3, 5, 16)
    assert result.declared == 1 and torch.allclose(result.module.module()(x), layer(x), atol=1e-5)


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


def test_fused_self_attention_rewrite():
    model = SelfAttention().eval()
    with torch.no_grad():
        script = torch.jit.trace(model, (torch.randn(2, 9, 16),), check_trace=False)
    assert "aten::_native_multi_head_attention" in str(script.inlined_graph)
    graph = foreign_graph(
        LoadedModel(ModelFormat.TORCHSCRIPT, Path("m.pt"), script), parse_input_specs(["x:b,s,16:float32"])
    )
    _, result = declare(graph)
    x = torch.randn(3, 5, 16)
    assert result.declared == 1 and torch.allclose(result.module.module()(x), model(x), atol=1e-5)
