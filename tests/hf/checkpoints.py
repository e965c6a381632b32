"""Tiny random Hugging Face checkpoints (2 layers, hidden 64), built with save_pretrained, with local tokenizers.

Every registered family has one (:data:`BUILDERS`); tests get them through the session-scoped
``hf_checkpoint`` fixture (tests/hf/conftest.py), so each is built once per run.
"""

from __future__ import annotations

from pathlib import Path

VOCAB = 320
TEXT_FILES = ("json/encoder.py", "textwrap.py", "string.py")  # training text for the tokenizers (stdlib)


def _text() -> list[str]:
    from fastattn.train.corpus import stdlib_root

    root = stdlib_root()
    return [(root / name).read_text() for name in TEXT_FILES]


def tokenizer(directory: Path, kind: str, specials: dict[str, str]) -> None:
    """A BPE (byte-level) or WordPiece tokenizer trained on a few stdlib files, saved beside the model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokens = list(dict.fromkeys(specials.values()))
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=specials["unk_token"]))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=tokens)
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=tokens,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(_text(), trainer)
    if kind == "wordpiece":
        cls, sep = specials["cls_token"], specials["sep_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])
    elif "bos_token" in specials:
        bos = specials["bos_token"]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    PreTrainedTokenizerFast(tokenizer_object=tok, **specials).save_pretrained(directory)


def _save(model, directory: Path, kind: str, specials: dict[str, str]) -> Path:
    import torch

    generator = torch.Generator().manual_seed(0)  # the same checkpoint every run: recorded figures reproduce
    with torch.no_grad():  # larger weights than transformers' init: decisive logits, no near-ties in greedy tests
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2, generator=generator)
    model.save_pretrained(directory)
    tokenizer(directory, kind, specials)
    return directory


BERT_SPECIALS = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                 "mask_token": "[MASK]"}  # fmt: skip
BPE_SPECIALS = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}  # ids 0..3


def bert(d: Path) -> Path:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=160, pad_token_id=1)  # fmt: skip
    return _save(BertModel(cfg), d, "wordpiece", BERT_SPECIALS)


def roberta(d: Path) -> Path:
    from transformers import RobertaConfig, RobertaModel

    cfg = RobertaConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=162, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2)  # fmt: skip
    return _save(RobertaModel(cfg, add_pooling_layer=False), d, "bpe", BPE_SPECIALS)


def distilbert(d: Path) -> Path:
    from transformers import DistilBertConfig, DistilBertModel

    cfg = DistilBertConfig(vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=160)
    return _save(DistilBertModel(cfg), d, "wordpiece", BERT_SPECIALS)


def gpt2(d: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=0, eos_token_id=2,
                     pad_token_id=1)  # fmt: skip
    return _save(GPT2LMHeadModel(cfg), d, "bpe", BPE_SPECIALS)


def _llama_shape(**extra) -> dict:
    return dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                **extra)  # fmt: skip


def llama(d: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    return _save(LlamaForCausalLM(LlamaConfig(**_llama_shape())), d, "bpe", BPE_SPECIALS)


def mistral(d: Path) -> Path:
    from transformers import MistralConfig, MistralForCausalLM

    return _save(MistralForCausalLM(MistralConfig(**_llama_shape(sliding_window=16))), d, "bpe", BPE_SPECIALS)


def qwen2(d: Path) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**_llama_shape(use_sliding_window=True, sliding_window=16, max_window_layers=1))
    return _save(Qwen2ForCausalLM(cfg), d, "bpe", BPE_SPECIALS)


def bart(d: Path) -> Path:
    from transformers import BartConfig, BartForConditionalGeneration

    cfg = BartConfig(vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=160,
                     bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2,
                     forced_bos_token_id=None, forced_eos_token_id=None)  # fmt: skip
    return _save(BartForConditionalGeneration(cfg), d, "bpe", BPE_SPECIALS)


def marian(d: Path) -> Path:
    from transformers import MarianConfig, MarianMTModel

    cfg = MarianConfig(vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                       decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                       max_position_embeddings=160, pad_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                       bos_token_id=0, forced_eos_token_id=None)  # fmt: skip
    return _save(MarianMTModel(cfg), d, "bpe", BPE_SPECIALS)


BUILDERS = {"bert": bert, "roberta": roberta, "distilbert": distilbert, "gpt2": gpt2, "llama": llama,
            "mistral": mistral, "qwen2": qwen2, "bart": bart, "marian": marian}  # fmt: skip


def phi3(d: Path) -> Path:
    """A family without a spec whose attention goes through transformers' AttentionInterface (the fallback)."""
    from transformers import Phi3Config, Phi3ForCausalLM

    cfg = Phi3Config(**_llama_shape(), sliding_window=None)
    return _save(Phi3ForCausalLM(cfg), d, "bpe", BPE_SPECIALS)


def t5(d: Path) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=VOCAB, d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4)
    T5ForConditionalGeneration(cfg).save_pretrained(d)
    return d


OTHERS = {"phi3": phi3, "t5": t5}
