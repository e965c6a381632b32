"""``--input`` specs for foreign models, and the one-graph :class:`GraphDef` built from them.

A spec is ``name:dims:dtype[:fill]``::

    src:batch,seq,512:float32         dims are sizes or names of dynamic dims
    ids:batch,seq=12:int64:<1000      ``seq=12`` traces seq at 12; ``<1000``: token ids in [0, 1000)
    ids:batch,seq:int64               integer inputs without a range: token ids in [0, vocabulary) when
                                      the model says its vocabulary (a transformers config's vocab_size,
                                      or its one nn.Embedding table), else [0, 2); inputs named *mask*
                                      are masks
    pad:batch,seq:bool                bool inputs are all False (e.g. a key_padding_mask: attend everywhere)
    mask:batch,seq:int64:mask         ``mask``: all ones (1 = attend); ``zeros`` / ``normal`` also accepted

Output specs are not declared: :func:`foreign_graph` runs the model twice, at two sets of
distinct trace sizes, and names each output dim after the input dim (or ``a+b`` sum of
dims) whose size it follows in both runs; a size that stays put is fixed.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from torch.utils import _pytree as pytree

from fastattn.errors import ExportError, InputError
from fastattn.families.graphs import DEFAULT_TRACE_SIZES, GraphDef
from fastattn.families.load import LoadedModel, ModelFormat
from fastattn.runtime.dims import names as dim_names
from fastattn.runtime.manifest import Dim, Fill, TensorSpec

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "int64", "int32", "bool")
FORM = "expected name:dim,dim,...:dtype[:<high|mask|zeros|normal], e.g. ids:batch,seq=12:int64:<1000"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_DIM = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:=(?P<size>\d+))?$|(?P<fixed>\d+)$")
MIN_TRACE_SIZE = 2  # torch.export specialises sizes 0 and 1
UNKNOWN_RANGE = 0  # an integer input given no '<N': resolved from the model (see resolve_token_ranges)
FALLBACK_RANGE = 2  # token ids in [0, 2) when the model does not say its vocabulary


@dataclass(frozen=True)
class InputSpec(TensorSpec):
    """A parsed ``--input``: a :class:`TensorSpec` plus the trace sizes it sets (``seq=12``)."""

    trace_sizes: tuple[tuple[str, int], ...] = ()

    def tensor(self) -> TensorSpec:
        """The plain TensorSpec (what graphs and manifests hold)."""
        return TensorSpec(self.name, self.dtype, self.shape, self.fill, self.high)


def parse_input_spec(text: str) -> InputSpec:
    """Parse ``name:dims:dtype[:fill]``; a malformed spec raises :class:`InputError` showing the form."""
    fields = text.strip().split(":")
    if len(fields) not in (3, 4) or not all(fields[:3]):
        raise _bad(text, "needs 3 or 4 ':'-separated fields")
    name, dims_text, dtype = fields[0].strip(), fields[1], fields[2].strip()
    if not _NAME.match(name):
        raise _bad(text, f"input name {name!r} is not an identifier")
    if dtype not in DTYPES:
        raise _bad(text, f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    shape, sizes = _parse_dims(text, dims_text)
    fill, high = _parse_fill(text, fields[3].strip() if len(fields) == 4 else "", dtype)
    return InputSpec(name, dtype, shape, fill, high, tuple(sizes.items()))


def parse_input_specs(texts: Sequence[str]) -> list[InputSpec]:
    """Parse several ``--input`` options (see :func:`split_specs` for their trace sizes)."""
    return [parse_input_spec(text) for text in texts]


def split_specs(specs: Sequence[TensorSpec]) -> tuple[list[TensorSpec], dict[str, int]]:
    """Plain tensor specs and the trace sizes that :class:`InputSpec` among them set (checked to agree)."""
    plain: list[TensorSpec] = []
    sizes: dict[str, int] = {}
    for spec in specs:
        if any(s.name == spec.name for s in plain):
            raise InputError(f"--input {spec.name!r} is given twice", "declare each input once")
        for dim, size in getattr(spec, "trace_sizes", ()):
            if sizes.setdefault(dim, size) != size:
                raise InputError(
                    f"dim {dim!r} is traced at both {sizes[dim]} and {size}", "give one trace size per dim"
                )
        plain.append(spec.tensor() if isinstance(spec, InputSpec) else spec)
    return plain, sizes


def _bad(text: str, why: str) -> InputError:
    return InputError(f"bad --input {text!r}: {why}", FORM)


def _parse_dims(text: str, dims_text: str) -> tuple[tuple[Dim, ...], dict[str, int]]:
    shape: list[Dim] = []
    sizes: dict[str, int] = {}
    for part in dims_text.split(","):
        m = _DIM.match(part.strip())
        if m is None:
            raise _bad(
                text, f"dim {part.strip()!r} is neither a size nor a name (optionally name=trace_size)"
            )
        if m["fixed"] is not None:
            if int(m["fixed"]) < 1:
                raise _bad(text, f"fixed size {m['fixed']} is empty: a model cannot be validated on 0 elements")
            shape.append(int(m["fixed"]))
            continue
        shape.append(m["name"])
        if m["size"] is not None:
            size = int(m["size"])
            if size < MIN_TRACE_SIZE:
                raise _bad(
                    text,
                    f"trace size {m['name']}={size} must be >= {MIN_TRACE_SIZE} (torch.export fixes 0 and 1)",
                )
            if sizes.setdefault(m["name"], size) != size:
                raise _bad(text, f"dim {m['name']!r} has two trace sizes")
    return tuple(shape), sizes


def _parse_fill(text: str, field: str, dtype: str) -> tuple[Fill, int]:
    integer = dtype in ("int64", "int32")
    if not field:
        return (Fill.TOKENS, UNKNOWN_RANGE) if integer else (Fill.ZEROS if dtype == "bool" else Fill.NORMAL, 0)
    if field.startswith("<"):
        if not integer:
            raise _bad(text, "a token range '<N' needs an int64 or int32 input")
        if not field[1:].isdigit() or int(field[1:]) < 1:
            raise _bad(text, f"token range {field!r} must be '<N' with N >= 1")
        return Fill.TOKENS, int(field[1:])
    fills = {f.value: f for f in (Fill.MASK, Fill.ZEROS, Fill.NORMAL)}
    if field not in fills:
        raise _bad(text, f"fill {field!r} is not '<N', 'mask', 'zeros' or 'normal'")
    if fills[field] is Fill.NORMAL and dtype not in ("float32", "float16"):
        raise _bad(text, "'normal' needs a float input")
    return fills[field], 0


# ---------------------------------------------------------------- the foreign graph


def foreign_graph(loaded: LoadedModel, specs: Sequence[TensorSpec], name: str = "model") -> GraphDef:
    """A one-graph :class:`GraphDef` for a TorchScript, .pt2 or pickled model.

    Every named dim gets a distinct trace size (>= 2, unlike any fixed size in the specs) unless
    an :class:`InputSpec` sets it (``seq=12``). Outputs are named ``output_0..`` (or by the dict
    keys / namedtuple fields the model returns); their dims come from running the model at
    two sets of sizes. A .pt2 program needs no specs: its own inputs are used.
    """
    if loaded.format is ModelFormat.FASTATTN or loaded.module is None:
        raise InputError(
            f"{loaded.source} is a fastattn checkpoint",
            "export it without --input: it declares its own graphs",
        )
    if not specs and isinstance(loaded.module, torch.export.ExportedProgram):
        specs = program_input_specs(loaded.module)
    if not specs:
        raise InputError(
            f"{loaded.describe()} does not say what inputs it takes", f"declare each with --input ({FORM})"
        )
    specs, trace_sizes = split_specs(specs)
    specs = resolve_token_ranges(specs, vocabulary_size(loaded.module))
    sizes = _distinct_sizes(specs, trace_sizes)
    graph = GraphDef(name, loaded.module, specs, [], trace_sizes=sizes)
    graph.outputs = infer_outputs(graph)
    return graph


def vocabulary_size(module: object) -> int | None:
    """The token vocabulary a model says it has: a transformers config's ``vocab_size``, or the size of
    its one ``nn.Embedding`` table (also inside TorchScript); None when it does not say."""
    vocab = getattr(getattr(module, "config", None), "vocab_size", None)
    if isinstance(vocab, int) and vocab > 0:
        return vocab
    if not isinstance(module, torch.nn.Module):
        return None
    tables = {int(m.weight.shape[0]) for m in module.modules()
              if getattr(m, "original_name", type(m).__name__) == "Embedding" and hasattr(m, "weight")}  # fmt: skip
    return tables.pop() if len(tables) == 1 else None


def resolve_token_ranges(specs: Sequence[TensorSpec], vocabulary: int | None) -> list[TensorSpec]:
    """Integer inputs declared without a range: masks when named so, else ids in the model's vocabulary."""
    out = []
    for spec in specs:
        if spec.fill is Fill.TOKENS and spec.high == UNKNOWN_RANGE:
            if "mask" in spec.name.lower():
                spec = replace(spec, fill=Fill.MASK)
            else:
                spec = replace(spec, high=vocabulary or FALLBACK_RANGE)
                log.info("input %r takes token ids in [0, %d)%s", spec.name, spec.high,
                         "" if vocabulary else " (the model does not say its vocabulary; set one with :<N)")  # fmt: skip
        out.append(spec)
    return out


def program_input_specs(program: torch.export.ExportedProgram) -> list[TensorSpec]:
    """TensorSpecs of a program's user inputs; its symbolic dims are named ``dim0, dim1, ...``."""
    names: dict[str, str] = {}
    user = set(program.graph_signature.user_inputs)
    specs = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise InputError(
                f"program input {node.name!r} is not a tensor",
                "re-export the program with tensor inputs only",
            )
        shape = tuple(
            d if isinstance(d, int) else names.setdefault(str(d), f"dim{len(names)}") for d in val.shape
        )
        specs.append(TensorSpec(node.name, _dtype_name(val.dtype), shape, _fill_for(val.dtype)))
    return specs


def infer_outputs(graph: GraphDef) -> list[TensorSpec]:
    """Output specs from two eager runs at different sizes (see the module docstring)."""
    first = graph.sizes()
    second = _distinct_sizes(graph.inputs, {}, avoid=set(first.values()))
    runs = [_run(graph, first)]
    try:
        runs.append(_run(graph, second))
    except InputError as e:  # e.g. a model that needs its trace sizes: match on the first run alone
        log.warning("second sizing run failed (%s); output dims are matched on one run", e.what)
        runs.append(runs[0])
        second = first
    names = _output_names(runs[0][1], len(runs[0][0]))
    specs = []
    for index, (a, b) in enumerate(zip(*(r[0] for r in runs), strict=True)):
        shape = tuple(
            _name_dim(graph, index, axis, x, y, first, second)
            for axis, (x, y) in enumerate(zip(a.shape, b.shape))
        )
        specs.append(TensorSpec(names[index], _dtype_name(a.dtype), shape, _fill_for(a.dtype)))
    return specs


def _run(graph: GraphDef, sizes: dict[str, int]) -> tuple[list[torch.Tensor], pytree.TreeSpec]:
    module = graph.module.module() if isinstance(graph.module, torch.export.ExportedProgram) else graph.module
    args = graph.sample(sizes)
    try:
        with torch.no_grad():
            result = module(*args)
    except Exception as e:  # the user's model may fail in any way on inputs it does not accept
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"the model failed on sample inputs at sizes {sizes}: {first}",
            "check the --input shapes and dtypes, or set trace sizes (e.g. seq=12)",
        ) from e
    leaves, tree = pytree.tree_flatten(result)
    if not leaves or not all(isinstance(t, torch.Tensor) for t in leaves):
        raise ExportError(
            f"the model returned {type(result).__name__} with non-tensor parts",
            "wrap it in a module returning tensors, a tuple, a namedtuple or a dict of tensors",
        )
    return leaves, tree


def _output_names(tree: pytree.TreeSpec, count: int) -> list[str]:
    """Dict keys / namedtuple fields of a flat result; ``output_i`` otherwise."""
    context = tree.context
    if tree.num_leaves == tree.num_children == count:
        if isinstance(context, list) and all(isinstance(k, str) for k in context):
            return list(context)  # dict keys
        fields = getattr(context, "_fields", None)  # namedtuple class
        if fields is not None:
            return list(fields)
    return [f"output_{i}" for i in range(count)]


def _name_dim(graph: GraphDef, index: int, axis: int, x: int, y: int, first: dict, second: dict) -> Dim:
    """The name (or ``a+b``) whose size an output dim followed in both runs; the size if it stayed put."""
    for dim, size in first.items():
        if size == x and second[dim] == y:
            return dim
    for a, b in itertools.combinations(first, 2):
        if first[a] + first[b] == x and second[a] + second[b] == y:
            return f"{a}+{b}"
    if x == y:
        return x
    raise ExportError(
        f"output {index} axis {axis} has size {x} then {y}, which follows no input dim or sum of two",
        "the manifest can only name dims that inputs define; return tensors shaped by the input dims",
    )


def _distinct_sizes(
    specs: Sequence[TensorSpec], fixed: dict[str, int], avoid: set[int] | None = None
) -> dict[str, int]:
    """A trace size per named dim: ``fixed`` ones kept, others distinct, >= 2 and unlike any fixed size."""
    dims = list(dict.fromkeys(n for s in specs for d in s.dims() for n in dim_names(d)))
    taken = {d for s in specs for d in s.shape if isinstance(d, int)} | set(fixed.values()) | (avoid or set())
    sizes: dict[str, int] = {}
    fresh = _fresh(taken)
    for dim in dims:
        if dim in fixed and not avoid:
            sizes[dim] = fixed[dim]
        elif dim in DEFAULT_TRACE_SIZES and DEFAULT_TRACE_SIZES[dim] not in taken | set(sizes.values()):
            sizes[dim] = DEFAULT_TRACE_SIZES[dim]
        else:
            sizes[dim] = next(s for s in fresh if s not in sizes.values())
    return sizes


def _fresh(taken: set[int]) -> Iterator[int]:
    return (s for s in itertools.count(MIN_TRACE_SIZE) if s not in taken)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _fill_for(dtype: torch.dtype) -> Fill:
    if dtype in (torch.int64, torch.int32):
        return Fill.TOKENS  # range resolved from the model (resolve_token_ranges)
    return Fill.ZEROS if dtype == torch.bool else Fill.NORMAL
