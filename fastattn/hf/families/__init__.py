"""The registry of Hugging Face families fastattn maps onto its own models: one spec each."""

from __future__ import annotations

from fastattn.hf.families.bart import BART, MARIAN
from fastattn.hf.families.bert import BERT, ROBERTA
from fastattn.hf.families.distilbert import DISTILBERT
from fastattn.hf.families.gpt2 import GPT2
from fastattn.hf.families.llama import LLAMA, MISTRAL, QWEN2
from fastattn.hf.spec import Family

REGISTRY: tuple[Family, ...] = (BERT, ROBERTA, DISTILBERT, GPT2, LLAMA, MISTRAL, QWEN2, BART, MARIAN)

# Families fastattn knows it cannot export, and why (the rest get the list of supported ones).
REFUSED = {
    "t5": "T5's relative position bias is an additive attention bias, which the fastattn op does not take",
    "mt5": "mT5's relative position bias is an additive attention bias, which the fastattn op does not take",
    "longt5": "LongT5's relative position bias is an additive attention bias, which the fastattn op does not take",
}


def find(model_type: str) -> Family | None:
    return next((f for f in REGISTRY if model_type in f.model_types), None)


def supported() -> list[str]:
    return sorted(t for f in REGISTRY for t in f.model_types)
