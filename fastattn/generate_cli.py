"""``fastattn generate OUT``: generate with an export through the torch-free runtime, streaming as it goes.

Text prompts need the export's ``tokenizer.json`` (models trained by ``fastattn train``);
other models take ``--prompt-ids``. Registered on the main group by :mod:`fastattn.cli`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("generate")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--prompt", default=None, help="Prompt text (needs the export's tokenizer.json).")
@click.option("--prompt-ids", default=None, help="Prompt token ids, e.g. 1,2,3.")
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0: greedy.")
@click.option("--top-k", type=int, default=0, show_default=True, help="Sample from the k most likely (0: all).")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling probability.")
@click.option("--seed", type=int, default=None, help="Sampling seed.")
@click.option("--stop", "stop_ids", type=int, multiple=True, help="A token id that ends generation (repeatable).")
@click.option("-p", "--provider", default="cpu", show_default=True, help="Execution provider.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug, with tracebacks).")
def generate_command(**options) -> None:
    """Generate after a prompt with the export in OUTPUT, printing tokens as they come."""
    from fastattn.cli import _handle_errors

    _handle_errors(_generate)(**options)


def _generate(output, prompt, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, stop_ids, provider,
              threads, verbose) -> None:  # fmt: skip
    from fastattn.cli import _logging, err
    from fastattn.errors import InputError
    from fastattn.runtime import Sampling, load, load_tokenizer

    _logging(verbose)
    if (prompt is None) == (prompt_ids is None):
        raise InputError("give one of --prompt or --prompt-ids", "e.g. --prompt 'def main(' or --prompt-ids 1,2,3")
    sampling = Sampling(temperature, top_k, top_p, seed)
    model = load(output, provider=provider, threads=threads)
    tokenizer = load_tokenizer(output)
    if prompt is not None:
        if tokenizer is None:
            raise InputError(f"{output} has no tokenizer.json, so --prompt cannot be encoded",
                             "pass token ids with --prompt-ids 1,2,3")  # fmt: skip
        ids = tokenizer.encode(prompt)
        if not ids:
            raise InputError("--prompt is empty", "pass some text")
    else:
        try:
            ids = [int(t) for t in prompt_ids.split(",") if t.strip()]
        except ValueError as e:
            raise InputError(f"bad --prompt-ids {prompt_ids!r}", "write comma-separated ids, e.g. 1,2,3") from e

    if prompt is not None:  # stream text: the prompt, then each token's characters once complete
        stream = tokenizer.stream()
        sys.stdout.write(prompt)

        def on_step(_step: int, new: list[int | None]) -> None:
            if new[0] is not None:
                sys.stdout.write(stream.decode(bytes([new[0]])))
                sys.stdout.flush()
    else:

        def on_step(_step: int, new: list[int | None]) -> None:
            if new[0] is not None:
                sys.stdout.write(f"{new[0]} ")
                sys.stdout.flush()

    result = model.generate(ids, max_new_tokens, sampling, stop_ids, on_step)
    if prompt is not None:
        sys.stdout.write(stream.decode(b"", final=True))
    sys.stdout.write("\n")
    err.print(f"{len(result.tokens[0])} tokens ({result.finish[0]}); prefill {result.prefill_seconds * 1e3:.1f} ms, "
              f"{result.tokens_per_second:.0f} tokens/s", highlight=False)  # fmt: skip
