"""The GenAI side of the decoding benchmark: a random Llama checkpoint and its GenAI builds.

Runs in ``.venv-genai`` (make genai-env), called by benchmarks/genai.py:

    .venv-genai/bin/python -m benchmarks.genai_llama build/genai/llama --prompts '[[...]]' [--config '{"hidden_size": 64}']

writes into the directory

    checkpoint/   LlamaForCausalLM (6 layers, hidden 512, 8 heads, 8 KV heads, FFN 1536, vocabulary
                  32000, untied embeddings; seed 0) + a local 32000-entry WordLevel tokenizer
                  (tokenizer.json, tokenizer_config.json): the model builder requires a tokenizer
    fp32/, int4/  ``python -m onnxruntime_genai.models.builder -i checkpoint -o DIR -p P -e cpu``,
                  then genai_config.json patched: intra-op threads, and no EOS token (below)
    info.json     parameter count, builder commands and settings, the MatMulNBits attributes of
                  the int4 model, and transformers' own greedy tokens after the first prompt

Random weights can emit the EOS id at any step; generation must run the full length, so the
patched genai_config.json lists no EOS id (``"eos_token_id": []``): greedy search then stops
only at ``max_length``, and the chosen tokens stay plain argmaxes (``min_length`` would mask
the EOS logit instead).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

THREADS = 2
SEED = 0
LLAMA = {"vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 6,
         "num_attention_heads": 8, "num_key_value_heads": 8, "max_position_embeddings": 2048,
         "tie_word_embeddings": False, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2}  # fmt: skip
SPECIAL = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2
PRECISIONS = ("fp32", "int4")


def checkpoint(directory: Path, llama: dict) -> int:
    """Save the random Llama and its tokenizer; the parameter count."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(SEED)
    model = LlamaForCausalLM(LlamaConfig(**llama)).eval()
    model.save_pretrained(directory)
    vocab = {token: i for i, token in enumerate(SPECIAL)}
    vocab.update({f"t{i}": i for i in range(len(SPECIAL), llama["vocab_size"])})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def build(checkpoint_dir: Path, output: Path, precision: str, log: Path) -> list[str]:
    """Run the GenAI model builder; the command line (its output goes to ``log``)."""
    cache = output.parent / "builder-cache"
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint_dir),
               "-o", str(output), "-p", precision, "-e", "cpu", "-c", str(cache)]  # fmt: skip
    with open(log, "w") as out:
        subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=True)
    return ["python", *command[1:]]


def patch_config(directory: Path) -> dict:
    """Two intra-op threads and no EOS id in genai_config.json; the changes made."""
    path = directory / "genai_config.json"
    config = json.loads(path.read_text())
    changes = {"model.decoder.session_options.intra_op_num_threads": THREADS,
               "model.decoder.session_options.inter_op_num_threads": 1,
               "model.eos_token_id": [], "search.do_sample": False, "search.top_k": 1}  # fmt: skip
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[key] = value
    path.write_text(json.dumps(config, indent=4) + "\n")
    return changes


def nbits_attributes(model_path: Path) -> dict:
    """How the int4 model's weights are quantized: MatMulNBits count and attributes."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute} if nodes else {}
    kinds = sorted({n.op_type for n in model.graph.node if n.domain == "com.microsoft"})
    return {"matmulnbits": len(nodes), "bits": attributes.get("bits"), "block_size": attributes.get("block_size"),
            "accuracy_level": attributes.get("accuracy_level"), "contrib_ops": kinds}  # fmt: skip


def reference_tokens(checkpoint_dir: Path, prompt: list[int], new: int) -> list[int]:
    """transformers' greedy tokens with its KV cache: what GenAI fp32 should reproduce."""
    import torch
    from transformers import LlamaForCausalLM

    torch.set_num_threads(THREADS)
    model = LlamaForCausalLM.from_pretrained(checkpoint_dir).eval()
    ids, past, out = torch.tensor([prompt]), None, []
    with torch.inference_mode():
        for _ in range(new):
            result = model(input_ids=ids, past_key_values=past, use_cache=True)
            past = result.past_key_values
            out.append(int(result.logits[0, -1].argmax()))
            ids = torch.tensor([[out[-1]]])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--prompts", required=True, help="JSON list of token-id lists; the first gets reference tokens"
    )
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--config", type=json.loads, default={}, help="JSON: LlamaConfig values that differ from LLAMA")
    args = parser.parse_args()
    root = args.directory
    ckpt = root / "checkpoint"
    llama = {**LLAMA, **args.config}
    info = {"llama_config": llama, "seed": SEED, "llama_parameters": checkpoint(ckpt, llama), "builds": {}}
    for precision in PRECISIONS:
        command = build(ckpt, root / precision, precision, root / f"builder-{precision}.log")
        info["builds"][precision] = {
            "command": " ".join(command),
            "genai_config_changes": patch_config(root / precision),
        }
    shutil.rmtree(root / "builder-cache", ignore_errors=True)
    info["builds"]["int4"]["weights"] = nbits_attributes(root / "int4" / "model.onnx")
    info["reference"] = {"prompt": 0, "tokens": reference_tokens(ckpt, json.loads(args.prompts)[0], args.new)}
    (root / "info.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
