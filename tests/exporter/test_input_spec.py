"""--input specs and the graph of a foreign model: parsing, trace sizes, output dims found by running it."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import pytest
import torch
from torch import nn

from fastattn.errors import ExportError, InputError
from fastattn.families.load import LoadedModel, ModelFormat
from fastattn.families.module.input_spec import FORM, InputSpec, foreign_graph, parse_input_spec, parse_input_specs
from fastattn.runtime.manifest import Fill, TensorSpec


@pytest.mark.parametrize(
    "text, want, sizes",
    [
        ("src:batch,seq,512:float32", TensorSpec("src", "float32", ("batch", "seq", 512)), ()),
        ("ids:batch,seq:int64", TensorSpec("ids", "int64", ("batch", "seq"), Fill.TOKENS, 0), ()),
        (
            "ids:batch,seq=12:int64:<1000",
            TensorSpec("ids", "int64", ("batch", "seq"), Fill.TOKENS, 1000),
            (("seq", 12),),
        ),
        ("pad:batch,seq:bool", TensorSpec("pad", "bool", ("batch", "seq"), Fill.ZEROS), ()),
        ("m:b,s:int32:mask", TensorSpec("m", "int32", ("b", "s"), Fill.MASK), ()),
        (" h : 2 , n=7 , 8 : float16 ", TensorSpec("h", "float16", (2, "n", 8)), (("n", 7),)),
    ],
)
def test_parse_valid_specs(text, want, sizes):
    spec = parse_input_spec(text)
    assert isinstance(spec, InputSpec) and isinstance(spec, TensorSpec)
    assert spec.tensor() == want and spec.trace_sizes == sizes


@pytest.mark.parametrize(
    "text, why",
    [
        ("src:batch,seq", "needs 3 or 4 ':'-separated fields"),
        ("src:batch:float32:<3:x", "needs 3 or 4"),
        ("src::float32", "needs 3 or 4"),
        ("1src:batch:float32", "is not an identifier"),
        ("src:batch:float64", "dtype 'float64' is not one of float32, float16, int64, int32, bool"),
        ("src:batch,seq-1:float32", "dim 'seq-1' is neither a size nor a name"),
        ("src:batch,seq=1:float32", "trace size seq=1 must be >= 2"),
        ("src:seq=4,seq=5:float32", "dim 'seq' has two trace sizes"),
        ("src:batch:float32:<10", "a token range '<N' needs an int64 or int32 input"),
        ("ids:batch:int64:<0", "token range '<0' must be '<N' with N >= 1"),
        ("ids:batch:int64:<many", "token range '<many'"),
        ("ids:batch:int64:uniform", "fill 'uniform' is not"),
        ("pad:batch:bool:normal", "'normal' needs a float input"),
    ],
)
def test_bad_specs_show_the_expected_form(text, why):
    with pytest.raises(InputError) as e:
        parse_input_spec(text)
    message = str(e.value)
    assert why in message and message.endswith(FORM) and "\n" not in message
    assert e.value.exit_code == 2


class Pair(nn.Module):
    """Named outputs, one of them a concatenation along a dim made of two input dims."""

    Out = namedtuple("Out", "hidden joined")

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 8)

    def forward(self, ids, memory):
        hidden = self.embed(ids)
        return self.Out(hidden, torch.cat([memory, hidden], dim=1).sum(-1))


def _loaded(module) -> LoadedModel:
    return LoadedModel(ModelFormat.PICKLED_MODULE, Path("model.pt"), module.eval())


def test_foreign_graph_infers_named_outputs_and_dims():
    specs = parse_input_specs(["ids:batch,seq:int64:<100", "memory:batch,mem=5,8:float32"])
    graph = foreign_graph(_loaded(Pair()), specs)
    assert graph.inputs == [spec.tensor() for spec in specs]  # plain specs, trace sizes moved to the graph
    assert graph.outputs == [
        TensorSpec("hidden", "float32", ("batch", "seq", 8)),
        TensorSpec("joined", "float32", ("batch", "seq+mem")),
    ]
    sizes = graph.sizes()
    assert sizes["mem"] == 5 and len(set(sizes.values())) == 3 and min(sizes.values()) >= 2
    assert 8 not in sizes.values()  # never equal to a fixed size, so no match is ambiguous


class DictOut(nn.Module):
    def forward(self, x):
        return {"double": 2 * x, "first_rows": x[:, :3]}


def test_dict_outputs_and_fixed_output_dims():
    graph = foreign_graph(_loaded(DictOut()), [parse_input_spec("x:batch,seq,4:float32")])
    assert graph.outputs == [
        TensorSpec("double", "float32", ("batch", "seq", 4)),
        TensorSpec("first_rows", "float32", ("batch", 3, 4)),
    ]
    assert graph.sizes()["seq"] == 3  # x[:, :3] follows seq in the first run only: the second run tells


def test_plain_tensor_output_is_output_0_and_default_dims_keep_their_sizes():
    graph = foreign_graph(_loaded(nn.Linear(4, 6)), [TensorSpec("x", "float32", ("batch", "sequence", 4))])
    assert graph.outputs == [TensorSpec("output_0", "float32", ("batch", "sequence", 6))]
    assert graph.sizes() == {"batch": 2, "sequence": 9}


class Flatten(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def test_output_dim_that_follows_no_input_dim_is_an_error():
    with pytest.raises(ExportError, match="output 0 axis 1 has size .* which follows no input dim"):
        foreign_graph(_loaded(Flatten()), [parse_input_spec("x:batch,seq,4:float32")])


def test_model_failing_on_the_sample_inputs_is_an_input_error():
    with pytest.raises(InputError, match=r"the model failed on sample inputs at sizes .*--input shapes"):
        foreign_graph(_loaded(nn.Linear(4, 6)), [parse_input_spec("x:batch,5:float32")])


def test_duplicate_inputs_and_conflicting_trace_sizes():
    with pytest.raises(InputError, match="'x' is given twice"):
        foreign_graph(_loaded(nn.Identity()), parse_input_specs(["x:b:float32", "x:b:float32"]))
    with pytest.raises(InputError, match="dim 'seq' is traced at both 4 and 5"):
        foreign_graph(_loaded(nn.Identity()), parse_input_specs(["x:seq=4:float32", "y:seq=5:float32"]))


def test_fastattn_checkpoints_and_missing_specs_are_refused():
    with pytest.raises(InputError, match="is a fastattn checkpoint"):
        foreign_graph(LoadedModel(ModelFormat.FASTATTN, Path("c.pt"), checkpoint={}), [])
    with pytest.raises(
        InputError, match=r"does not say what inputs it takes. Fix: declare each with --input"
    ):
        foreign_graph(_loaded(nn.Identity()), [])


def test_exported_program_brings_its_own_inputs():
    dims = {0: torch.export.Dim("b", min=2), 1: torch.export.Dim("s", min=2)}
    program = torch.export.export(nn.Linear(4, 6), (torch.randn(2, 3, 4),), dynamic_shapes=(dims,))
    loaded = LoadedModel(ModelFormat.EXPORTED_PROGRAM, Path("m.pt2"), program)
    graph = foreign_graph(loaded, [])
    assert graph.inputs == [TensorSpec("input", "float32", ("dim0", "dim1", 4))]
    assert graph.outputs == [TensorSpec("output_0", "float32", ("dim0", "dim1", 6))]
