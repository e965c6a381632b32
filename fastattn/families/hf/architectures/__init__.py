"""The registry of Hugging Face families fastattn maps onto its own models: one spec each."""

from __future__ import annotations

from fastattn.families.hf.architectures.bart import BART, MARIAN
from fastattn.families.hf.architectures.bert import BERT, ROBERTA
from fastattn.families.hf.architectures.distilbert import DISTILBERT
from fastattn.families.hf.architectures.gpt2 import GPT2
from fastattn.families.hf.architectures.llama import LLAMA, MISTRAL, QWEN2
from fastattn.families.hf.spec import Architecture

REGISTRY: tuple[Architecture, ...] = (BERT, ROBERTA, DISTILBERT, GPT2, LLAMA, MISTRAL, QWEN2, BART, MARIAN)

# Families fastattn knows it cannot export, and why (the rest get the list of supported ones).
REFUSED = {
    "t5": "T5's relative position bias is an additive attention bias, which the fastattn op does not take",
    "mt5": "mT5's relative position bias is an additive attention bias, which the fastattn op does not take",
    "longt5": "LongT5's relative position bias is an additive attention bias, which the fastattn op does not take",
}


def find(model_type: str) -> Architecture | None:
    return next((f for f in REGISTRY if model_type in f.model_types), None)


def supported() -> list[str]:
    return sorted(t for f in REGISTRY for t in f.model_types)
