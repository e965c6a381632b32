"""What transformers itself does with a checkpoint: hidden states, logits and greedy generation (the test oracle)."""

from __future__ import annotations

from pathlib import Path

import torch

PROMPTS = [[5, 17, 33, 101, 7, 250, 9, 12, 40, 41, 60, 61], [88, 99, 100, 3, 4, 5], [200]]


def causal_lm(directory: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager", local_files_only=True).eval()


def seq2seq_lm(directory: Path):
    from transformers import AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM.from_pretrained(directory, attn_implementation="eager", local_files_only=True).eval()


def encoder(directory: Path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(directory, attn_implementation="eager", local_files_only=True).eval()


def greedy(model, prompts: list[list[int]], new: int, pad: int, seq2seq: bool = False) -> list[list[int]]:
    """transformers' ``generate(do_sample=False)`` for a batch, without EOS (every row runs ``new`` tokens):
    decoders left-padded, encoder-decoders right-padded, as fastattn's runtime pads them."""
    from transformers import GenerationConfig

    model.generation_config.eos_token_id = None
    model.config.eos_token_id = None
    width = max(map(len, prompts))
    pads = [[pad] * (width - len(p)) for p in prompts]
    rows = [p + q for p, q in zip(prompts, pads)] if seq2seq else [q + p for p, q in zip(prompts, pads)]
    masks = [[1] * len(p) + [0] * len(q) if seq2seq else [0] * len(q) + [1] * len(p) for p, q in zip(prompts, pads)]
    config = GenerationConfig(max_new_tokens=new, min_new_tokens=new, do_sample=False, num_beams=1, pad_token_id=pad,
                              decoder_start_token_id=model.config.decoder_start_token_id)  # fmt: skip
    with torch.no_grad():
        out = model.generate(torch.tensor(rows), attention_mask=torch.tensor(masks), generation_config=config)
    start = 1 if seq2seq else width
    return [row[start:] for row in out.tolist()]
