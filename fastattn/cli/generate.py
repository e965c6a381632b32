"""``fastattn generate OUT``: generate with an export through the torch-free runtime, streaming as it goes.

Text prompts need the export's ``tokenizer.json`` (models trained by ``fastattn train``, or a
Hugging Face checkpoint's, read with the ``tokenizers`` package); other models take
``--prompt-ids``. Hugging Face models stop at their EOS ids unless ``--stop`` names others.
One prompt streams; several (repeat the option) run as one batch and print one line per
prompt at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fastattn.cli.app import command, err, provider_option, threads_option, verbose_option
from fastattn.errors import InputError


@click.command("generate")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--prompt", "prompts", multiple=True, help="Prompt text (needs the export's tokenizer.json); repeatable.")
@click.option("--prompt-ids", "prompt_ids", multiple=True, help="Prompt token ids, e.g. 1,2,3; repeatable.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True, help="0: greedy.")
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True,
              help="Sample from the k most likely (0: all).")  # fmt: skip
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Nucleus sampling probability.")  # fmt: skip
@click.option("--seed", type=int, default=None, help="Sampling seed.")
@click.option("--stop", "stop_ids", type=int, multiple=True,
              help="A token id that ends generation (repeatable) [default: a Hugging Face model's EOS ids].")
@provider_option
@threads_option
@verbose_option
@command
def generate_command(output, prompts, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, stop_ids,
                     provider, threads) -> None:  # fmt: skip
    """Generate after a prompt with the export in OUTPUT, printing tokens as they come."""
    from fastattn.runtime import Sampling, load, load_tokenizer  # noqa: PLC0415

    if bool(prompts) == bool(prompt_ids):
        raise InputError("give --prompt or --prompt-ids (not both)", "e.g. --prompt 'def main(' or --prompt-ids 1,2,3")
    sampling = Sampling(temperature, top_k, top_p, seed)
    stop_ids = stop_ids or None  # None: the export's own EOS ids (Hugging Face models)
    model = load(output, provider=provider, threads=threads)
    tokenizer = load_tokenizer(output) if prompts else None
    if prompts:
        if tokenizer is None:
            raise InputError(f"{output} has no tokenizer.json, so --prompt cannot be encoded",
                             "pass token ids with --prompt-ids 1,2,3")  # fmt: skip
        ids = [tokenizer.encode(text) for text in prompts]
        if not all(ids):
            raise InputError("a --prompt is empty", "pass some text")
    else:
        ids = [_parse_ids(text) for text in prompt_ids]

    if len(ids) > 1:  # a batch: one line per prompt once all are done
        result = model.generate(ids, max_new_tokens, sampling, stop_ids)
        for text, tokens in zip(prompts or prompt_ids, result.tokens, strict=True):
            sys.stdout.write((text + tokenizer.decode(tokens) if tokenizer else " ".join(map(str, tokens))) + "\n")
    else:
        result = _stream(prompts[0] if prompts else None, ids[0], tokenizer,
                         lambda on_step: model.generate(ids, max_new_tokens, sampling, stop_ids, on_step))  # fmt: skip
    counts = ", ".join(f"{len(t)} ({why})" for t, why in zip(result.tokens, result.finish, strict=True))
    err.print(f"tokens {counts}; prefill {result.prefill_seconds * 1e3:.1f} ms, "
              f"{result.tokens_per_second:.0f} tokens/s", highlight=False)  # fmt: skip


def _parse_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise InputError(f"bad --prompt-ids {text!r}", "write comma-separated ids, e.g. 1,2,3") from e
    if not ids:
        raise InputError("a --prompt-ids is empty", "write comma-separated ids, e.g. 1,2,3")
    return ids


def _stream(text: str | None, prompt: list[int], tokenizer, run):
    """One prompt: write its text (or nothing), then each new token as it comes."""
    if text is not None:  # stream text: the prompt, then each token's characters once complete
        stream = tokenizer.stream(prompt)
        sys.stdout.write(text)

        def on_step(_step: int, new: list[int | None]) -> None:
            if new[0] is not None:
                sys.stdout.write(stream.push(new[0]))
                sys.stdout.flush()
    else:

        def on_step(_step: int, new: list[int | None]) -> None:
            if new[0] is not None:
                sys.stdout.write(f"{new[0]} ")
                sys.stdout.flush()

    result = run(on_step)
    if text is not None:
        sys.stdout.write(stream.end())
    sys.stdout.write("\n")
    return result
