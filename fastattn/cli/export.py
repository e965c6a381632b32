"""``fastattn export`` (``fastattn-export``): a model file or checkpoint directory to a validated export."""

from __future__ import annotations

from pathlib import Path

import click

from fastattn.cli.app import Command, command, force_option, json_option, progress, threads_option, verbose_option
from fastattn.cli.options import lowering_options, quantize_options
from fastattn.cli.summary import print_export
from fastattn.targets import Target


def _input_specs(_ctx, _param, values: tuple[str, ...]):
    if not values:
        return ()
    from fastattn.families.module.input_spec import parse_input_spec  # noqa: PLC0415  (imports torch)

    return tuple(parse_input_spec(v) for v in values)  # an InputError is one line (cli.app.OneLineErrors)


@click.command("export", cls=Command)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output directory [default: <model>-fastattn].")
@click.option(
    "--input", "inputs", multiple=True, callback=_input_specs, metavar="NAME:DIMS:DTYPE[:FILL]",
    help="An input of a model that is not fastattn's own (repeat per input): NAME:DIMS:DTYPE[:FILL], e.g. "
    "src:batch,seq,512:float32. DIMS are sizes or names of dynamic dims (seq=12 traces seq at 12). FILL says "
    "what validation feeds: ':<N' token ids in [0, N) (integer inputs default to the model's vocabulary "
    "when it says one, else [0, 2)), ':mask' all ones with some rows padded (the default for integer inputs "
    "named *mask*), ':zeros', ':normal'. Example: ids:batch,seq:int64:<32000.",
)  # fmt: skip
@click.option(
    "--allow-pickle", is_flag=True,
    help="Load a whole pickled nn.Module (torch.save(model)). Unpickling runs code from the file: "
    "use only with files you trust.",
)  # fmt: skip
@click.option("--code", type=click.Path(path_type=Path), default=None, metavar="FILE.py",
              help="With --allow-pickle: the Python file defining the pickled model's classes; imported as a "
                   "module (its __main__ block does not run), classes the pickle names in __main__ come from it.")
@click.option("--opset", type=click.IntRange(18, 23), default=None,
              help="Default-domain ONNX opset of the captured graph [default: 20]; fusions and lowering raise it "
              "to 23 where their ops need it (the report and manifest list the result).")  # fmt: skip
@lowering_options()
@click.option("--kv-buffer", is_flag=True,
              help="Decoders on CPU: GroupQueryAttention with rotary inside and one shared past/present buffer "
                   "(GenAI's decode path); rows must be unpadded, sequences at most max_positions long.")
@click.option("--task", default=None, metavar="TASK",
              help="Hugging Face checkpoints: feature-extraction, text-generation or text2text-generation "
                   "(Optimum's names) [default: from the checkpoint's architecture].")
@quantize_options()
@click.option("--package", "packages", multiple=True, type=click.Choice(["ort", "optimum"]),
              help="Also write a package: ort = <graph>.ort + required_operators.config (minimal ORT builds); "
                   "optimum = Optimum's encoder-decoder layout (ORTModelForSeq2SeqLM opens OUT).")
@threads_option
@force_option
@json_option
@verbose_option
@command
def export_command(model, output, inputs, allow_pickle, code, opset, lowering, kv_buffer, task, quantize, packages,
                   threads, force, as_json) -> None:  # fmt: skip
    """Export MODEL to ONNX, validated: a model.pt (fastattn checkpoint, TorchScript, .pt2 or pickled module)
    or a Hugging Face checkpoint directory (config.json + safetensors, never downloaded)."""
    from fastattn.exporter.options import DEFAULT_OPSET  # noqa: PLC0415
    from fastattn.exporter.pipeline import ExportOptions, export  # noqa: PLC0415

    target = Target(lowering.target)
    options = ExportOptions(
        output or model.with_name(model.name.rstrip("/") + "-fastattn"), inputs, allow_pickle,
        opset or DEFAULT_OPSET, force=force, threads=threads, target=target, profile=lowering.profile,
        only=lowering.only, lowering_plan=lowering.lowering_plan,
        allow_fusion_shortfall=lowering.allow_fusion_shortfall, quantize=quantize.step(target), kv_buffer=kv_buffer,
        package_ort="ort" in packages, package_optimum="optimum" in packages, task=task, code=code,
    )  # fmt: skip
    with progress("exporting", quiet=as_json) as step:
        result = export(model, options, progress=step)
    print_export(result, as_json)


def export_main() -> None:
    """Entry point of ``fastattn-export`` (the same as ``fastattn export``)."""
    export_command(prog_name="fastattn-export")
