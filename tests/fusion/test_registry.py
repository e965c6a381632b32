"""The registry as a whole: every variant fuses to its expected counts, attention is untouched."""

from pathlib import Path

import onnx_ir as ir
import pytest

from fastattn.attention.onnx_function import DOMAIN, OP_TYPE
from fastattn.errors import ExportError
from fastattn.exporter.fusion import REGISTRY, RULE_NAMES, fuse
from fastattn.families.fastattn.fusions import expected_counts
from fastattn.models.config import Norm
from tests.fusion.models import VARIANTS, assert_same_outputs, exported

GRAPHS = [(name, graph) for name in VARIANTS
          for graph in (("encoder", "decoder") if name == "seq2seq" else ("model",))]  # fmt: skip


def test_rules_are_named_once_and_ordered():
    assert len(set(RULE_NAMES)) == len(RULE_NAMES) == len(REGISTRY)
    order = RULE_NAMES.index
    assert order("layer_norm") < order("skip_layer_norm") and order("rms_norm") < order("skip_rms_norm")
    assert order("gelu") < order("bias_gelu") and order("rotary") < order("packed_qkv")


@pytest.mark.parametrize("name", RULE_NAMES)
def test_every_rule_has_its_test_file(name):
    assert (Path(__file__).parent / f"test_{name}.py").is_file()


@pytest.mark.parametrize(("name", "graph"), GRAPHS, ids=[f"{n}-{g}" for n, g in GRAPHS])
def test_every_variant_fuses_to_its_expected_counts(name, graph, contrib):
    export = exported(name, graph)
    model = export.model()
    report = fuse(model, contrib, export.expected)  # raises on any shortfall
    for rule in report.counts:
        assert report.counts[rule] == export.expected[rule], rule
    assert set(report.counts) | set(report.skipped) == set(RULE_NAMES)
    assert_same_outputs(export, model)


def _attention(model: ir.Model) -> list[tuple]:
    nodes = ir.traversal.RecursiveGraphIterator(model.graph)
    return [(n.name, n.overload, [o.name for o in n.outputs], {k: a.value for k, a in n.attributes.items()},
             len(n.inputs)) for n in nodes if (n.domain, n.op_type) == (DOMAIN, OP_TYPE)]  # fmt: skip


def _functions(model: ir.Model) -> dict:
    serialize = ir.serde.serialize_function
    return {key: serialize(f).SerializeToString(deterministic=True) for key, f in model.functions.items()}


@pytest.mark.parametrize("name", ["enc_ln_pre", "dec_rms_pre_gqa"])
def test_attention_nodes_and_functions_survive(name, contrib):
    export = exported(name)
    before, model = export.model(), export.model()
    fuse(model, contrib, export.expected)
    assert _attention(model) == _attention(before) and len(_attention(model)) == 2
    assert _functions(model) == _functions(before)


def _wrap_attention_in_if(model: ir.Model) -> None:
    """Put each attention node in both branches of an If, as a guarded lowering does."""
    graph = model.graph
    for node in [n for n in graph if (n.domain, n.op_type) == (DOMAIN, OP_TYPE)]:
        flag = ir.node("Constant", [], {"value": ir.tensor(True)})
        branches = []
        for side in ("then", "else"):
            copy = ir.node(OP_TYPE, list(node.inputs), {k: a.value for k, a in node.attributes.items()},
                           domain=DOMAIN, overload=node.overload, num_outputs=len(node.outputs))  # fmt: skip
            for out, old in zip(copy.outputs, node.outputs):
                out.name, out.type, out.shape = f"{old.name}_{side}", old.type, old.shape
            branches.append(ir.Graph([], copy.outputs, nodes=[copy], name=side))
        cond = ir.node("If", [flag.outputs[0]], {"then_branch": branches[0], "else_branch": branches[1]},
                       num_outputs=len(node.outputs))  # fmt: skip
        graph.insert_before(node, [flag, cond])
        for old, new in zip(node.outputs, cond.outputs):
            new.name, new.type, new.shape = f"{old.name}_if", old.type, old.shape
            old.replace_all_uses_with(new, replace_graph_outputs=True)
        graph.remove(node, safe=True)


def _branches(model: ir.Model) -> dict[str, list[str]]:
    kinds = lambda n, branch: [m.op_type for m in n.attributes[branch].value]  # noqa: E731
    return {n.name: kinds(n, "then_branch") + kinds(n, "else_branch") for n in model.graph
            if n.op_type == "If"}  # fmt: skip


def test_attention_inside_if_survives():
    """Branch nodes keep kind, attributes, outputs; only outer-scope inputs are rewired (to packed q/k/v)."""
    export = exported("enc_ln_pre")
    before = export.model()
    _wrap_attention_in_if(before)
    model = ir.from_proto(ir.to_proto(before))
    fuse(model, True, export.expected)
    assert _branches(model) == _branches(before) and len(_branches(model)) == 2
    assert _attention(model) == _attention(before) and len(_attention(model)) == 4
    assert_same_outputs(export, model)


def test_shortfall_names_rule_counts_and_reason():
    export = exported("enc_ln_pre")
    wrong = expected_counts(export.config.replace(norm=Norm.RMS))  # says RMS norm; the graph has LayerNorm
    with pytest.raises(ExportError) as error:
        fuse(export.model(), True, wrong)
    message = str(error.value)
    assert "rms_norm fused 0 of 5 expected: best partial match" in message
    assert "skip_rms_norm fused 0 of 4 expected: no node starts a partial match" in message
    report = fuse(export.model(), True, wrong, allow_shortfall=True)
    assert set(report.shortfalls) == {"rms_norm", "skip_rms_norm"}
    assert report.counts["rotary"] == 4  # the rest still fused


def test_expected_counts_needs_the_graph_of_an_encoder_decoder():
    config = exported("seq2seq", "encoder").config
    with pytest.raises(ValueError, match="'encoder' and 'decoder'"):
        expected_counts(config)
    assert expected_counts(config, "decoder")["layer_norm"] == 2 * 3 + 1  # self, cross, ffn per layer + final


def test_unknown_rule_names_are_refused():
    with pytest.raises(ValueError, match="unknown fusion rules \\['rmsnorm'\\]; rules are layer_norm"):
        fuse(exported("enc_ln_pre").model(), True, {"rmsnorm": 1})


def test_report_lines_read_per_rule():
    export = exported("dec_rms_pre_gqa")
    report = fuse(export.model(), False, export.expected)
    lines = report.lines()
    assert "rms_norm: 5 x RMSNormalization (5 rewritten)" in lines
    assert any(line.startswith("skip_rms_norm: skipped (") for line in lines)
    assert lines[-1] == "default-domain opset raised from 20 to 23"
    assert report.notes[-1] == lines[-1] and all("skipped" in n for n in report.notes[:-1])
