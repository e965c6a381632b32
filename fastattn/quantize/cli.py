"""Quantization options shared by ``fastattn export`` and ``fastattn quantize``, and the ``quantize`` command."""

from __future__ import annotations

from pathlib import Path

import click

from fastattn.quantize.options import CalibrationMethod, Mode, QuantOptions


def _fraction(_ctx, param, value: str | None) -> float | None:
    """``5%`` or ``0.05``."""
    if value is None:
        return None
    try:
        return float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number or a percentage (e.g. 2% or 0.02)", param=param) from None


def quantize_options(mode_required: bool = False):
    """The options that build a :class:`QuantizeStep` (see :func:`quantize_step`)."""
    options = [
        click.option("-q", "--quantize", "mode", type=click.Choice([m.value for m in Mode]), required=mode_required,
                     help="Quantize after lowering and fusion: int8 (dynamic), int8-static (QDQ, calibrated), "
                     "int4 (weight-only MatMulNBits), fp16 (for GPU targets)."),
        click.option("--block-size", type=int, default=32, show_default=True, help="int4: weights per scale."),
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
        click.option("--min-cosine", type=float, default=None,
                     help="Relax the gate: least output cosine with the float model [int8 0.999, int4 0.99]."),
        click.option("--max-accuracy-drop", callback=_fraction, metavar="PCT",
                     help="Relax the gate: classifier accuracy may drop this much [int8 1%, int4 3%]."),
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def quantize_step(target: str, mode, block_size, asymmetric, accuracy_level, calibration, calibration_method,
                  eval_data, keep_float, max_ppl_increase, min_cosine, max_accuracy_drop):  # fmt: skip
    """The :class:`QuantizeStep` the options ask for (None without ``--quantize``)."""
    from fastattn.exporter.gates import GATES
    from fastattn.exporter.lowering.target import Target
    from fastattn.exporter.quantization import QuantizeStep

    if mode is None:
        return None
    mode = Mode(mode)
    options = QuantOptions(
        mode, block_size=block_size, symmetric=not asymmetric, accuracy_level=accuracy_level,
        calibration_method=CalibrationMethod(calibration_method), keep_float=tuple(keep_float),
        provider=Target(target).provider,
    )  # fmt: skip
    gate = GATES[mode].relaxed(max_ppl_increase, min_cosine, max_accuracy_drop)
    return QuantizeStep(options, gate, eval_data, calibration)
