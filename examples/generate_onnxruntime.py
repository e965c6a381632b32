"""Greedy generation with a fastattn export using only onnxruntime and numpy (nothing of fastattn).

    python generate_onnxruntime.py OUT 1,2,3 [MAX_NEW_TOKENS] [--report-modules]

Everything the app needs is in OUT/fastattn.json:

* ``arch``: "decoder" (one graph, ``model``) or "encoder_decoder" (``encoder`` then ``decoder``);
* ``graphs[].file``, ``inputs`` and ``outputs``: names, dtypes, shapes with named dims;
* ``graphs[].cache``: pairs ``{"past": "past_key_0", "present": "present_key_0"}``: feed each
  present back as its past at the next step; an empty cache has length 0. A windowed
  layer's cache dim reads ``min(past_sequence,K)``: its present keeps only the K positions
  later tokens can see, so the app just feeds it back and that cache stops growing; a
  hierarchical layer's reads ``summarized(past_sequence,B)`` (one summary per complete block
  of B, then the open block's keys): fed back as it is too;
* ``session.disabled_optimizers``: ORT optimizers to switch off when building sessions;
  ``session.memory_pattern_off``: graphs whose sessions run without memory patterns
  (windowed decoders: ORT would keep one pattern per step, and memory would grow).

Decoder inputs: ``input_ids`` (batch, sequence), ``attention_mask`` (batch, past+sequence;
1 = token) over every token so far, the pasts (batch, kv_heads, past_sequence, head_size);
positions come from the mask. Encoder-decoders: the encoder returns ``cross_key_i``/``cross_value_i`` once; the
decoder takes them at every step with ``encoder_attention_mask``; the decoder starts from
the prompt's last token (the convention of ``fastattn train seq2seq``).

Prints the new token ids, space-separated; with ``--report-modules``, one JSON line
``{"tokens": [...], "imported": [...]}`` naming any fastattn/torch/onnx module that got imported.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(directory: Path, manifest: dict, graph: dict) -> ort.InferenceSession:
    settings = manifest.get("session", {})
    options = ort.SessionOptions()
    options.enable_mem_pattern = graph["name"] not in settings.get("memory_pattern_off", [])
    return ort.InferenceSession(str(directory / graph["file"]), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=settings.get("disabled_optimizers") or None)  # fmt: skip


def empty_cache(graph: dict, batch: int) -> dict[str, np.ndarray]:
    specs = {spec["name"]: spec for spec in graph["inputs"]}
    cache = {}
    for pair in graph["cache"]:
        spec = specs[pair["past"]]
        shape = [batch if d == "batch" else 0 if isinstance(d, str) else d for d in spec["shape"]]
        cache[pair["past"]] = np.zeros(shape, spec["dtype"])
    return cache


def generate(directory: Path, prompt: list[int], max_new_tokens: int) -> list[int]:
    manifest = json.loads((directory / "fastattn.json").read_text())
    graphs = {g["name"]: g for g in manifest["graphs"]}
    ids = np.array([prompt], np.int64)
    mask = np.ones_like(ids)
    fixed = {}  # decoder inputs that stay the same at every step
    if manifest["arch"] == "encoder_decoder":
        encoder, graph = session(directory, manifest, graphs["encoder"]), graphs["decoder"]
        names = [o.name for o in encoder.get_outputs()]
        encoded = dict(zip(names, encoder.run(names, {"input_ids": ids, "attention_mask": mask})))
        wanted = {spec["name"] for spec in graph["inputs"]}
        fixed = {name: value for name, value in encoded.items() if name in wanted}
        fixed["encoder_attention_mask"] = mask
        ids, mask = ids[:, -1:], np.ones((1, 1), np.int64)
    elif manifest["arch"] == "decoder":
        graph = graphs["model"]
    else:
        raise SystemExit(f"{directory} holds an {manifest['arch']}, which cannot generate")
    decoder = session(directory, manifest, graph)
    outputs = [o.name for o in decoder.get_outputs()]
    past = empty_cache(graph, batch=1)
    tokens = []
    for _ in range(max_new_tokens):
        result = dict(zip(outputs, decoder.run(outputs, {"input_ids": ids, "attention_mask": mask, **fixed, **past})))
        tokens.append(int(result["logits"][0, -1].argmax()))
        past = {pair["past"]: result[pair["present"]] for pair in graph["cache"]}
        ids = np.array([[tokens[-1]]], np.int64)
        mask = np.concatenate([mask, np.ones((1, 1), np.int64)], axis=1)
    return tokens


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) < 2:
        raise SystemExit(__doc__.split("\n\n")[1])
    directory, prompt = Path(args[0]), [int(t) for t in args[1].split(",")]
    tokens = generate(directory, prompt, int(args[2]) if len(args) > 2 else 32)
    if "--report-modules" in sys.argv:
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("fastattn", "torch", "onnx", "onnxscript"))
        print(json.dumps({"tokens": tokens, "imported": heavy}))
    else:
        print(" ".join(map(str, tokens)))


if __name__ == "__main__":
    main()
