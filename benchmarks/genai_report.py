"""The markdown of the decoding benchmark (benchmarks/genai.py): tables, targets, method, caveats."""

from __future__ import annotations

import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET = 0.05  # other processes' CPU share above which a row counts as measured on a busy machine


METHOD = (
    (
        "- tokens/s = new tokens / time of the whole generation (prefill included); prefill = time to the first "
        "token (for GenAI: setup included); decode = (total - prefill) / (new - 1). Every row runs the model `new` "
        "times. 'w/o setup' leaves GenAI's `og.GeneratorParams` + `og.Generator` creation out."
    ),
    (
        "- GenAI: `og.GeneratorParams` + `og.Generator` + `append_tokens` + `generate_next_token` until `is_done`, "
        "all inside the timed region. fastattn: `fastattn.runtime.load(dir, provider='cpu', threads=2).generate"
        "(prompt, max_new_tokens)`. PyTorch eager: `model(ids, mask, past)` under `torch.inference_mode()`, "
        "`torch.set_num_threads(2)`."
    ),
    (
        "- Peak RSS: VmHWM of the row's worker process (imports, model, generation; not `ru_maxrss`, which "
        "Linux carries over from the parent across exec); RSS rise = peak - RSS right after loading the model. "
        "Size: model files on disk (`model.onnx*`; the checkpoint for eager)."
    ),
    (
        "- busy: other processes' share of all CPUs while the row's worker ran (/proc/stat busy time minus the "
        "worker's own CPU time). 'cpu/wall' of each worker is in the JSON (`cpu_per_wall`)."
    ),
)
CAVEATS = (
    (
        "- Random weights: token agreement and perplexities say how far quantization moves a model with no "
        "knowledge, not what it costs a trained one; random logits have near-ties that flip easily."
    ),
    (
        "- GenAI shares one KV buffer of max_length for past and present (`past_present_share_buffer`), and so do "
        "the `kv` rows (`--kv-buffer`: batches right-padded, GQA's convention); the other fastattn rows return a new present cache "
        "(past + 1) at every step, the path that takes left-padded batches."
    ),
)


def round_lines(result: dict) -> list[str]:
    """Median tokens/s of each row per round, with other processes' CPU share: where contention hit."""
    workers = result["workers"]
    rounds = max(len(runs) for runs in workers.values())
    lines = ["Per round (a fresh process per row and round; busy = other processes' CPU share):", "",
             "| row | " + " | ".join(f"round {i + 1} tokens/s (busy)" for i in range(rounds)) + " |",
             "|---|" + "---|" * rounds]  # fmt: skip
    for name, runs in workers.items():
        cells = [f"{statistics.median(t['tokens_per_s'] for t in r['timings']):.0f} ({r['other_cpu_share']:.0%})"
                 for r in runs]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def target_lines(targets: dict) -> list[str]:
    def verdict(ratio: float) -> str:
        provisional = "" if targets.get("machine_quiet") else " (provisional: the machine was busy)"
        return f"{ratio:.2f}x, **{'met' if ratio >= 1 else 'not met'}**{provisional}"

    fp32, quant = targets["fastattn_fp32_vs_genai_fp32"], targets["best_quantized_vs_genai_int4"]
    return [
        f"- fastattn's best fp32 ({targets.get('best_fp32', 'fastattn-fp32')}) >= GenAI fp32 tokens/s: {verdict(fp32)}",
        f"- fastattn's best quantized mode ({targets['best_quantized']}) >= GenAI int4: {verdict(quant)}",
        (
            "- Without GenAI's per-generation setup (`og.Generator` creation, column 'setup ms'): fp32 "
            f"{targets['fastattn_fp32_vs_genai_fp32_without_setup']:.2f}x, quantized "
            f"{targets['best_quantized_vs_genai_int4_without_setup']:.2f}x."
        ),
    ]


def markdown(result: dict) -> str:
    machine, settings, targets = result["machine"], result["settings"], result["targets"]
    models, rows = result["models"], {r["name"]: r for r in result["rows"]}
    versions = result["genai_env_versions"]
    busy = max(r["other_cpu_share"] for r in rows.values())
    lines = [
        "# Greedy decoding: fastattn vs ONNX Runtime GenAI vs PyTorch eager",
        "",
        (
            f"{machine['cpu']}, {settings['threads']} threads, batch 1, prompt {settings['prompt_tokens']} random tokens "
            f"+ {settings['new']} new tokens (greedy), CPU EP. onnxruntime {machine['versions'].get('onnxruntime')}, "
            f"torch {machine['versions'].get('torch')}; GenAI environment: onnxruntime-genai "
            f"{versions.get('onnxruntime-genai')}, onnxruntime {versions.get('onnxruntime')}, transformers "
            f"{versions.get('transformers')}. Median over {rows['genai-fp32']['generations']} generations per row "
            f"({settings['prompts']} prompts x {settings['runs']} runs x {settings['rounds']} rounds, each round a fresh "
            f"process per row after one warm-up generation). Other processes used up to {busy:.0%} of the CPUs "
            "during a row (column 'busy')."
        ),
        "",
        (
            "| row | tokens/s (min-max) | tokens/s w/o setup | setup ms | prefill ms | decode ms/token | peak RSS MB "
            "| RSS rise MB | size MB | tokens vs | same positions (prefix per prompt) | busy |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        agree = r.get("agreement")
        vs = r["agreement_with"] if agree else "-"
        same = f"{agree['positions']:.0%} ({'/'.join(map(str, agree['prefix']))})" if agree else "-"
        lines.append(f"| {name} | **{r['tokens_per_s']:.0f}** ({r['tokens_per_s_min']:.0f}-{r['tokens_per_s_max']:.0f}) "
                     f"| {r['tokens_per_s_without_setup']:.0f} | {r['setup_ms']} | {r['prefill_ms']} "
                     f"| {r['decode_ms_per_token']} | {r['peak_rss_mb']:.0f} | {r['rss_rise_mb']:.0f} | {r['size_mb']} "
                     f"| {vs} | {same} | {r['other_cpu_share']:.0%} |")  # fmt: skip
    lines += [
        "",
        *round_lines(result),
        "",
        "## Targets (issue 6)",
        "",
        *target_lines(targets),
        "",
        "## Models",
        "",
    ]
    fa, llama = models["fastattn"], models["llama"]
    int4 = llama["builds"]["int4"].get("weights", {})
    ref = rows["genai-fp32"].get("transformers_reference", {})
    lines += [
        (
            f"- GenAI: random `LlamaForCausalLM` (seed 0, transformers' init), {llama['llama_parameters']:,} parameters, "
            f"no biases; built with `{llama['builds']['fp32']['command'].replace(str(ROOT) + '/', '')}` (and `-p int4`: {int4.get('matmulnbits')} "
            f"MatMulNBits incl. the LM head, {int4.get('bits')} bits, block {int4.get('block_size')}, accuracy level "
            f"{int4.get('accuracy_level')}; embedding table fp32). genai_config.json patched: "
            "`intra_op_num_threads` 2, `eos_token_id` [] (random weights must not stop early; every row is checked "
            f"to produce exactly {settings['new']} tokens). GenAI fp32 tokens equal transformers' own greedy tokens "
            f"(first prompt): {'yes' if ref.get('identical') else 'NO, same positions ' + str(ref.get('positions'))}."
        ),
        (
            f"- fastattn: `FastAttnModel` of the same shape (seed 0, fastattn's init), {fa['parameters']:,} parameters, "
            f"{fa['bias_parameters']:,} of them biases (``bias=False``, as the Llama); exported with "
            "`fastattn.exporter.pipeline.export` (fp32, target cpu), then `requantize` to int8 (dynamic) and int4 "
            "(MatMulNBits); the accuracy gate runs on random samples (no held-out data for a random model). The "
            "`kv` rows are exported with `--kv-buffer` (unguarded GroupQueryAttention with rotary inside, one "
            "buffer per cache shared by past and present, GenAI's decode path)."
        ),
        (
            "- The two checkpoints have different random weights (each library's own initialisation), so tokens are "
            "compared only within a library: quantized vs fp32, PyTorch eager vs fastattn fp32."
        ),
    ]
    for name in (n for n in rows if rows[n].get("quantization")):
        q = rows[name].get("quantization") or {}
        s = q.get("settings", {})
        lines.append(f"- {name} manifest: gate {q.get('gate')} on {q.get('data')}; perplexity {q.get('float_perplexity')} "
                     f"-> {q.get('quantized_perplexity')}, top-1 agreement {q.get('quantized_agreement')}, cosine "
                     f"{q.get('quantized_cosine')}; {q.get('quantized_weights')} weights quantized, {q.get('kept_float')} "
                     f"kept float; {s.get('format')}, {s.get('tool', '').rsplit('.', 1)[-1]}"
                     + (f", block {s.get('block_size')}, accuracy level {s.get('accuracy_level')}" if 'block_size' in s else ""))  # fmt: skip
    lines += ["", "## Method", "", *METHOD, "", "## Caveats", "", *CAVEATS]
    if busy > QUIET:
        lines.append(f"- The machine was busy (other processes up to {busy:.0%} of the CPUs): rerun on a quiet machine "
                     "before drawing conclusions.")  # fmt: skip
    return "\n".join(lines) + "\n"
