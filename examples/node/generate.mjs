// Greedy generation with a fastattn export using only onnxruntime-node (nothing of fastattn).
//
//   npm install --ignore-scripts          # once: onnxruntime-node's CPU binaries ship in the npm package
//   node generate.mjs OUT --prompt-ids 1,2,3 [--max-new-tokens 32] [--threads N]
//
// Prints one JSON line: {"tokens": [...], "onnxruntime_node": "<version>", "arch": ..., "precision": ...}.
//
// Everything the app needs is in OUT/fastattn.json:
//   arch            "decoder" (one graph, "model") or "encoder_decoder" ("encoder" then "decoder");
//   graphs[].file   the ONNX file; graphs[].inputs / outputs: name, dtype, shape (named dims as strings);
//   graphs[].cache  pairs {"past": "past_key_0", "present": "present_key_0"}: each present is fed back
//                   as its past at the next step; an empty cache has length 0.
//                   Past shapes are (batch, kv_heads, past_sequence, head_size); a windowed layer's
//                   length reads min(past_sequence,K): its present keeps only the K positions later
//                   tokens can see, so feeding it back keeps that cache from growing; a hierarchical
//                   layer's reads summarized(past_sequence,B): summaries of complete blocks + the open block;
//   session         {"disabled_optimizers": [...]}: ORT optimizers to switch off when building sessions;
//                   {"memory_pattern_off": [graph names]}: sessions to build with enableMemPattern false
//                   (windowed decoders: ORT would keep one memory pattern per step and grow).
// Decoder inputs: input_ids (batch, sequence) int64, attention_mask (batch, past+sequence) int64
// over every token so far (1 = token; positions come from the mask), then the pasts. Encoder-decoders: the encoder returns
// cross_key_i / cross_value_i once; the decoder takes them at every step with encoder_attention_mask
// and starts from the prompt's last token (the convention of `fastattn train seq2seq`).
// Quantized exports (int8: MatMulInteger / DynamicQuantizeLinear; int4: MatMulNBits; com.microsoft
// contrib ops after ORT's fusions) need nothing special: onnxruntime-node's CPU build has those kernels.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import ort from "onnxruntime-node";

const require = createRequire(import.meta.url);
const ORT_VERSION = require("onnxruntime-node/package.json").version;

const ARRAYS = {
  float32: Float32Array,
  float16: Uint16Array, // onnxruntime-node carries float16 as raw 16-bit words
  int64: BigInt64Array,
  int32: Int32Array,
};

function usage(message) {
  process.stderr.write(`error: ${message}\nusage: node generate.mjs OUT --prompt-ids 1,2,3 [--max-new-tokens 32] [--threads N]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { dir: null, prompt: null, maxNew: 32, threads: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
    if (a === "--prompt-ids") args.prompt = value().split(",").map((t) => {
      if (!/^\d+$/.test(t.trim())) usage(`--prompt-ids takes comma-separated integers, got ${JSON.stringify(t)}`);
      return Number(t);
    });
    else if (a === "--max-new-tokens") args.maxNew = Number(value());
    else if (a === "--threads") args.threads = Number(value());
    else if (a.startsWith("--")) usage(`unknown option ${a}`);
    else if (args.dir === null) args.dir = a;
    else usage(`unexpected argument ${a}`);
  }
  if (args.dir === null) usage("give the export directory");
  if (!args.prompt || args.prompt.length === 0) usage("give --prompt-ids");
  if (!Number.isInteger(args.maxNew) || args.maxNew < 1) usage("--max-new-tokens must be a positive integer");
  return args;
}

async function session(dir, manifest, graph, threads) {
  const options = { executionProviders: ["cpu"], graphOptimizationLevel: "all" };
  if (threads > 0) options.intraOpNumThreads = threads;
  if ((manifest.session?.memory_pattern_off ?? []).includes(graph.name)) options.enableMemPattern = false;
  const disabled = manifest.session?.disabled_optimizers ?? [];
  if (disabled.length) {
    // onnxruntime-node has no `disabledOptimizers` option, but its `extra` entries become session
    // config entries, and ORT reads this key (names separated by ';') like Python's disabled_optimizers
    // (checked with 1.30.0: naming DynamicQuantizeMatMulFusion leaves an int8 graph's MatMulInteger unfused).
    options.extra = { "optimization.disable_specified_optimizers": disabled.join(";") };
  }
  return ort.InferenceSession.create(join(dir, graph.file), options);
}

function int64(values, dims) {
  return new ort.Tensor("int64", BigInt64Array.from(values, (v) => BigInt(v)), dims);
}

function emptyCache(graph, batch) {
  const specs = Object.fromEntries(graph.inputs.map((s) => [s.name, s]));
  const cache = {};
  for (const pair of graph.cache) {
    const spec = specs[pair.past];
    const Array_ = ARRAYS[spec.dtype];
    if (!Array_) throw new Error(`cache dtype ${spec.dtype} of ${pair.past} is not handled`);
    // every named dim of an empty cache but the batch is 0 (past_sequence, min(past_sequence,K))
    const dims = spec.shape.map((d) => (d === "batch" ? batch : typeof d === "string" ? 0 : d));
    cache[pair.past] = new ort.Tensor(spec.dtype, new Array_(0), dims);
  }
  return cache;
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

function lastArgmax(logits) {
  // logits: (1, sequence, vocab); argmax over the last position, first index on ties (like numpy)
  const [, seq, vocab] = logits.dims;
  const data = logits.data, offset = (seq - 1) * vocab;
  const value = logits.type === "float16" ? (i) => halfToFloat(data[i]) : (i) => data[i];
  let best = 0, bestValue = value(offset);
  for (let v = 1; v < vocab; v++) {
    const x = value(offset + v);
    if (x > bestValue) { best = v; bestValue = x; }
  }
  return best;
}

async function generate(dir, prompt, maxNew, threads) {
  const manifest = JSON.parse(readFileSync(join(dir, "fastattn.json"), "utf8"));
  const graphs = Object.fromEntries(manifest.graphs.map((g) => [g.name, g]));
  let ids = int64(prompt, [1, prompt.length]);
  let maskLength = prompt.length;
  let fixed = {}; // decoder inputs that stay the same at every step
  let graph;
  if (manifest.arch === "encoder_decoder") {
    const encoder = await session(dir, manifest, graphs.encoder, threads);
    const encoded = await encoder.run({ input_ids: ids, attention_mask: int64(prompt.map(() => 1), [1, prompt.length]) });
    graph = graphs.decoder;
    const wanted = new Set(graph.inputs.map((s) => s.name));
    for (const [name, value] of Object.entries(encoded)) if (wanted.has(name)) fixed[name] = value;
    fixed.encoder_attention_mask = int64(prompt.map(() => 1), [1, prompt.length]);
    ids = int64([prompt[prompt.length - 1]], [1, 1]);
    maskLength = 1;
  } else if (manifest.arch === "decoder") {
    graph = graphs.model;
  } else {
    throw new Error(`${dir} holds an ${manifest.arch}, which cannot generate`);
  }
  const decoder = await session(dir, manifest, graph, threads);
  let past = emptyCache(graph, 1);
  const tokens = [];
  for (let step = 0; step < maxNew; step++) {
    const mask = int64(new Array(maskLength).fill(1), [1, maskLength]); // batch 1: every position is a token
    const result = await decoder.run({ input_ids: ids, attention_mask: mask, ...fixed, ...past });
    tokens.push(lastArgmax(result.logits));
    past = Object.fromEntries(graph.cache.map((pair) => [pair.past, result[pair.present]]));
    ids = int64([tokens[tokens.length - 1]], [1, 1]);
    maskLength += 1;
  }
  return { tokens, manifest };
}

const args = parseArgs(process.argv.slice(2));
try {
  const { tokens, manifest } = await generate(args.dir, args.prompt, args.maxNew, args.threads);
  console.log(JSON.stringify({ tokens, onnxruntime_node: ORT_VERSION, arch: manifest.arch, precision: manifest.precision ?? null }));
} catch (error) {
  process.stderr.write(`error: ${error.message.split("\n")[0]}\n`);
  process.exit(1);
}
