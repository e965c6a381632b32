"""Option bundles: groups of click options that arrive in a command as one typed request."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import click

from fastattn.cli.app import bundle
from fastattn.errors import InputError
from fastattn.quantize.options import CalibrationMethod, Mode
from fastattn.targets import Target


def _fraction(_ctx, param, value: str | None) -> float | None:
    """``5%`` or ``0.05``, at least 0."""
    if value is None:
        return None
    try:
        number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number or a percentage (e.g. 2% or 0.02)", param=param) from None
    if not number >= 0:
        raise click.BadParameter(f"{value!r} is negative: a gate can only be relaxed (e.g. 2%)", param=param)
    return number


@dataclass(frozen=True)
class QuantizeRequest:
    """What ``--quantize`` and its companions ask for; :meth:`step` makes the pipeline's step."""

    mode: str | None
    block_size: int = 32
    asymmetric: bool = False
    accuracy_level: int | None = None
    calibration: Path | None = None
    calibration_method: str = CalibrationMethod.MINMAX.value
    eval_data: Path | None = None
    keep_float: tuple[str, ...] = ()
    max_ppl_increase: float | None = None
    min_cosine: float | None = None
    max_accuracy_drop: float | None = None
    search_budget: float | None = None  # seconds for the sensitivity search (None: QuantizeStep's default)
    outlier_channels: int | None = None  # int8: float input channels per weight (None: the step decides)

    def step(self, target: Target):
        """The quantize step for an export lowered for ``target`` (None without ``--quantize``)."""
        from fastattn.quantize.modes import MODES  # noqa: PLC0415
        from fastattn.quantize.options import QuantOptions  # noqa: PLC0415
        from fastattn.quantize.step import QuantizeStep  # noqa: PLC0415

        if self.mode is None:
            return None
        mode = Mode(self.mode)
        options = QuantOptions(
            mode, block_size=self.block_size, symmetric=not self.asymmetric, accuracy_level=self.accuracy_level,
            calibration_method=CalibrationMethod(self.calibration_method), keep_float=tuple(self.keep_float),
            outlier_channels=self.outlier_channels, target=target,
        )  # fmt: skip
        gate = MODES[mode].gate.relaxed(self.max_ppl_increase, self.min_cosine, self.max_accuracy_drop)
        step = QuantizeStep(options, gate, self.eval_data, self.calibration)
        return step if self.search_budget is None else replace(step, budget=self.search_budget)


def quantize_options(mode_required: bool = False):
    """The ``--quantize`` options, passed to the command as ``quantize: QuantizeRequest``."""
    return bundle(
        QuantizeRequest, "quantize",
        click.option("-q", "--quantize", "mode", type=click.Choice([m.value for m in Mode]), required=mode_required,
                     help="Quantize after lowering and fusion: int8 (dynamic), int8-static (QDQ, calibrated), "
                     "int4 (weight-only MatMulNBits), fp16 (for GPU targets)."),
        click.option("--block-size", type=click.IntRange(min=16, max=4096), default=32, show_default=True,
                     help="int4: weights per scale (a power of two)."),
        click.option("--asymmetric", is_flag=True, help="int4: asymmetric weights (a zero point per block)."),
        click.option("--accuracy-level", type=click.IntRange(0, 4), default=None,
                     help="int4: MatMulNBits compute type (4 = int8, fast on CPU) [default: chosen for the target]."),
        click.option("--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="int8-static: .npz of model inputs [default: half of the evaluation data]."),
        click.option("--calibration-method", type=click.Choice([m.value for m in CalibrationMethod]),
                     default=CalibrationMethod.MINMAX.value, show_default=True),
        click.option("--eval", "eval_data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help=".npz the accuracy gate is measured on (input_ids, attention_mask, labels) "
                     "[default: the checkpoint's held-out data, else random samples]."),
        click.option("--keep-float", multiple=True, metavar="NAME",
                     help="A weight to keep in float: node, initializer or module-path prefix (repeatable)."),
        click.option("--max-ppl-increase", callback=_fraction, metavar="PCT",
                     help="Relax the gate: perplexity may grow this much (e.g. 2%) [int8 1%, int4 3%, fp16 0.1%]."),
        click.option("--min-cosine", type=click.FloatRange(-1.0, 1.0), default=None,
                     help="Relax the gate: least output cosine with the float model [int8 0.999, int4 0.99]."),
        click.option("--max-accuracy-drop", callback=_fraction, metavar="PCT",
                     help="Relax the gate: classifier accuracy may drop this much [int8 1%, int4 3%]."),
        click.option("--search-budget", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
                     help="When the gate fails, the search for weights to keep in float stops after this long "
                     "[default: 300]; a search stopped there fails the gate, so a busy machine may need more."),
        click.option("--outlier-channels", type=click.IntRange(min=0), default=None, metavar="N",
                     help="int8: compute the N largest input channels of each weight MatMul in float beside the "
                     "int8 product [default: 0, and 4 when plain int8 fails its gate]."),
    )  # fmt: skip


@dataclass(frozen=True)
class LoweringRequest:
    """How attention is lowered: the target, the shapes candidates are timed at, a forced rule."""

    target: str
    profile: tuple = ()
    only: str | None = None
    allow_fusion_shortfall: bool = False
    lowering_plan: Path | None = None


def parse_profile(_ctx, _param, values: tuple[str, ...]):
    """``prefill=1x2048`` / ``decode=1x1+2048`` -> ShapeCase(name, batch, sequence, past)."""
    from fastattn.exporter.lowering.measure import ShapeCase  # noqa: PLC0415

    cases = []
    for text in values:
        name, _, shape = text.partition("=")
        match = re.fullmatch(r"(\d+)x(\d+)(?:\+(\d+))?", shape)
        if not name or not match:
            raise click.BadParameter(f"{text!r}: write NAME=BATCHxSEQ[+PAST], e.g. decode=1x1+2048")
        batch, seq, past = (int(g) if g else 0 for g in match.groups())
        if batch < 1 or seq < 1:
            raise click.BadParameter(f"{text!r}: batch and sequence must be at least 1")
        cases.append(ShapeCase(name, batch, seq, past))
    return tuple(cases)


def lowering_options(targets: tuple[Target, ...] = tuple(Target)):
    """``-t``, ``--profile``, ``--lowering``, ``--lowering-plan``, ``--allow-fusion-shortfall``,
    passed to the command as ``lowering: LoweringRequest``."""
    return bundle(
        LoweringRequest, "lowering",
        click.option("-t", "--target", type=click.Choice([t.value for t in targets]), default=Target.CPU.value,
                     show_default=True,
                     help="Execution provider to lower attention for; portable keeps the fastattn function nodes."),
        click.option("--profile", "profile", multiple=True, callback=parse_profile, metavar="NAME=BxS[+P]",
                     help="A shape to time lowering candidates at, e.g. prefill=1x2048, decode=1x1+2048 (repeatable)."),
        click.option("--lowering", "only", default=None, metavar="RULE",
                     help="Use this lowering rule wherever it applies (no measurement); see docs/architecture.md."),
        click.option("--allow-fusion-shortfall", is_flag=True, help="Accept fewer fusions than the model should get."),
        click.option("--lowering-plan", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                     help="Pin the kernels: a lowering plan (JSON) written by an earlier export (lowering_plan.json)."),
    )  # fmt: skip


def parse_size(text: str) -> tuple[str, int]:
    """``DIM=N`` of ``--size``."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value.isdigit():
        raise InputError(f"bad --size {text!r}", "write DIM=N, e.g. --size sequence=16")
    return name, int(value)
