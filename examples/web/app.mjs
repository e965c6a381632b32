// A fastattn export in the browser with onnxruntime-web, knowing nothing of fastattn but fastattn.json.
//
//   npm install --ignore-scripts          # onnxruntime-web 1.30.0, pinned by package-lock.json
//   cp -r OUT model                       # or ?model=URL-of-an-export-directory/
//   python3 -m http.server 8000 --bind 127.0.0.1    # then open http://127.0.0.1:8000/
//
// Everything the page needs is in MODEL/fastattn.json (see examples/node/generate.mjs for the fields):
// arch (decoder | encoder | encoder_decoder), graphs[] (file, inputs, outputs, cache pairs), and
// session (disabled_optimizers; memory_pattern_off: graphs to run without memory patterns).
// Decoders: input_ids and attention_mask over every token so far, then the pasts; each step feeds
// every present back as its past (windowed layers' presents are already trimmed: fed back as they are).
// Query parameters: model=URL/ (default model/), ep=wasm|webgpu, prompt=..., max-new-tokens=N.

const params = new URLSearchParams(location.search);
const MODEL = new URL(params.get("model") ?? "model/", location.href);
const DIST = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
const $ = (id) => document.getElementById(id);

const ARRAYS = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array };
let ort = null;
let app = null; // { manifest, tokenizer, sessions, ep }

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function fetchJson(url, required) {
  const response = await fetch(url);
  if (!response.ok) {
    if (required) throw new Error(`no ${url.pathname.split("/").pop()} at ${url.href} (HTTP ${response.status})`);
    return null;
  }
  return response.json();
}

// ---- tokenizers: fastattn's bytes; a Hugging Face tokenizer.json is the next branch ----------------

class ByteTokenizer {
  constructor() { this.decoder = new TextDecoder("utf-8"); }
  encode(text) { return Array.from(new TextEncoder().encode(text)); }
  // streaming: a token may be half of a UTF-8 character; the decoder holds it back until complete
  decodeNext(id) { return this.decoder.decode(new Uint8Array([id]), { stream: true }); }
  reset() { this.decoder = new TextDecoder("utf-8"); }
}

class IdsTokenizer { // the export carries no tokenizer: the prompt is token ids, the output too
  encode(text) {
    const ids = text.split(/[\s,]+/).filter(Boolean).map(Number);
    if (!ids.length || ids.some((t) => !Number.isInteger(t) || t < 0)) throw new Error("this export has no tokenizer.json: type token ids, e.g. 1,2,3");
    return ids;
  }
  decodeNext(id) { return `${id} `; }
  reset() {}
}

function makeTokenizer(data) {
  if (data === null) return new IdsTokenizer();
  if (data.kind === "bytes") return new ByteTokenizer();
  if (data.model?.type) throw new Error(`a Hugging Face ${data.model.type} tokenizer.json is not handled by this page yet`);
  throw new Error(`unknown tokenizer kind ${JSON.stringify(data.kind)}`);
}

// ---- sessions from the manifest -----------------------------------------------------------------------

async function createSession(manifest, graph, ep) {
  const options = { executionProviders: [ep], graphOptimizationLevel: "all" };
  if ((manifest.session?.memory_pattern_off ?? []).includes(graph.name)) options.enableMemPattern = false;
  const disabled = manifest.session?.disabled_optimizers ?? [];
  // onnxruntime-web's `extra` entries become session config entries: this one is Python's disabled_optimizers
  if (disabled.length) options.extra = { "optimization.disable_specified_optimizers": disabled.join(";") };
  // weights above 1 MiB lie beside the graph (fastattn/onnx_files.py); the graph names them by file name
  const data = `${graph.file}.data`;
  if ((manifest.files ?? []).includes(data)) options.externalData = [{ path: data, data: new URL(data, MODEL).href }];
  return ort.InferenceSession.create(new URL(graph.file, MODEL).href, options);
}

const int64 = (values, dims) => new ort.Tensor("int64", BigInt64Array.from(values, (v) => BigInt(v)), dims);

function emptyCache(graph) {
  const specs = Object.fromEntries(graph.inputs.map((s) => [s.name, s]));
  const cache = {};
  for (const pair of graph.cache) {
    const spec = specs[pair.past];
    const dims = spec.shape.map((d) => (d === "batch" ? 1 : typeof d === "string" ? 0 : d)); // every named dim but batch: 0
    const Array_ = spec.dtype === "float16" ? Uint16Array : ARRAYS[spec.dtype];
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

function values(tensor) {
  const data = tensor.data;
  return tensor.type === "float16" && data instanceof Uint16Array ? Float32Array.from(data, halfToFloat) : data;
}

function lastArgmax(logits) { // (1, sequence, vocab): the last position; first index on ties, like numpy
  const [, seq, vocab] = logits.dims, data = values(logits), offset = (seq - 1) * vocab;
  let best = 0;
  for (let v = 1; v < vocab; v++) if (data[offset + v] > data[offset + best]) best = v;
  return best;
}

// ---- generation -------------------------------------------------------------------------------------

const nextFrame = () => new Promise((resolve) => setTimeout(resolve, 0));

async function generate(prompt, maxNew) {
  const { manifest, tokenizer, sessions } = app;
  const graphs = Object.fromEntries(manifest.graphs.map((g) => [g.name, g]));
  let ids = int64(prompt, [1, prompt.length]), maskLength = prompt.length, fixed = {}, graph;
  if (manifest.arch === "encoder_decoder") {
    const encoded = await sessions.encoder.run({ input_ids: ids, attention_mask: int64(prompt.map(() => 1), [1, prompt.length]) });
    graph = graphs.decoder;
    const wanted = new Set(graph.inputs.map((s) => s.name));
    for (const [name, value] of Object.entries(encoded)) if (wanted.has(name)) fixed[name] = value;
    fixed.encoder_attention_mask = int64(prompt.map(() => 1), [1, prompt.length]);
    ids = int64([prompt.at(-1)], [1, 1]);
    maskLength = 1;
  } else {
    graph = graphs.model;
  }
  const session = sessions[graph.name];
  const out = $("output"), tokens = [];
  tokenizer.reset();
  let past = emptyCache(graph), prefillMs = 0, decodeMs = 0;
  for (let step = 0; step < maxNew; step++) {
    const mask = int64(new Array(maskLength).fill(1), [1, maskLength]); // batch 1: every position is a token
    const t = performance.now();
    const result = await session.run({ input_ids: ids, attention_mask: mask, ...fixed, ...past });
    const token = lastArgmax(result.logits);
    const ms = performance.now() - t;
    if (step === 0) prefillMs = ms; else decodeMs += ms;
    tokens.push(token);
    past = Object.fromEntries(graph.cache.map((pair) => [pair.past, result[pair.present]]));
    ids = int64([token], [1, 1]);
    maskLength += 1;
    out.append(tokenizer.decodeNext(token));
    out.dataset.tokens = JSON.stringify(tokens);
    $("count").textContent = tokens.length;
    $("prefill-ms").textContent = prefillMs.toFixed(1);
    if (step > 0) $("tps").textContent = (step / (decodeMs / 1000)).toFixed(1);
    await nextFrame(); // let the page paint the token
  }
  return tokens;
}

async function encode(prompt) {
  const { manifest, sessions } = app;
  const graph = manifest.graphs[0];
  const feeds = { input_ids: int64(prompt, [1, prompt.length]), attention_mask: int64(prompt.map(() => 1), [1, prompt.length]) };
  const t = performance.now();
  const result = await sessions[graph.name].run(feeds);
  $("prefill-ms").textContent = (performance.now() - t).toFixed(1);
  const lines = [];
  for (const [name, tensor] of Object.entries(result)) {
    const data = values(tensor), dims = tensor.dims;
    if (dims.length === 2) { // (batch, classes): a classification
      const max = Math.max(...data), exps = Array.from(data, (x) => Math.exp(x - max)), sum = exps.reduce((a, b) => a + b);
      lines.push(`${name}: class ${exps.indexOf(Math.max(...exps))}  p = [${exps.map((e) => (e / sum).toFixed(3)).join(", ")}]`);
    } else if (dims.length === 3) { // (batch, sequence, d): the mean-pooled embedding
      const [, seq, d] = dims, pooled = new Float64Array(d);
      for (let s = 0; s < seq; s++) for (let k = 0; k < d; k++) pooled[k] += data[s * d + k] / seq;
      const norm = Math.hypot(...pooled);
      lines.push(`${name} (${dims.join("×")}): mean-pooled embedding, norm ${norm.toFixed(4)}\n  [${Array.from(pooled.slice(0, 8), (x) => x.toFixed(4)).join(", ")}, …]`);
    }
  }
  $("output").textContent = lines.join("\n");
  $("output").dataset.embedding = JSON.stringify(lines);
}

async function run() {
  $("run").disabled = true;
  const out = $("output");
  out.textContent = "";
  out.dataset.done = "0";
  out.dataset.tokens = "[]";
  $("tps").textContent = "–";
  try {
    const prompt = app.tokenizer.encode($("prompt").value);
    const span = document.createElement("span");
    span.className = "prompt";
    span.textContent = app.tokenizer instanceof ByteTokenizer ? $("prompt").value : `${prompt.join(" ")} → `;
    out.append(span);
    status("running…");
    if (app.manifest.arch === "encoder") await encode(prompt);
    else await generate(prompt, Number($("max-new").value) || 64);
    status(`done on ${app.ep}`);
  } catch (e) {
    status(`error: ${String(e.message ?? e).split("\n")[0]}`, true);
  } finally {
    out.dataset.done = "1";
    $("run").disabled = false;
  }
}

async function start() {
  const ep = params.get("ep") ?? "wasm";
  $("ep").value = ep;
  $("ep").onchange = () => { params.set("ep", $("ep").value); location.search = params.toString(); };
  if (params.has("prompt")) $("prompt").value = params.get("prompt");
  if (params.has("max-new-tokens")) $("max-new").value = params.get("max-new-tokens");
  try {
    ort = await import(DIST + (ep === "webgpu" ? "ort.webgpu.min.mjs" : "ort.wasm.min.mjs"));
    ort.env.wasm.wasmPaths = DIST;
    // threads need a cross-origin isolated page (COOP/COEP headers); a plain static server gives one thread
    ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    $("ort-version").textContent = ort.env.versions?.web ?? "?";
    if (ep === "webgpu" && !navigator.gpu) throw new Error("WebGPU is not available in this browser (no GPU adapter): choose WebAssembly");
    const manifest = await fetchJson(new URL("fastattn.json", MODEL), true);
    const tokenizer = makeTokenizer(await fetchJson(new URL("tokenizer.json", MODEL), false));
    status("loading the model…");
    const sessions = {};
    for (const graph of manifest.graphs) sessions[graph.name] = await createSession(manifest, graph, ep);
    app = { manifest, tokenizer, sessions, ep };
    const config = manifest.config ?? {};
    $("model-line").textContent = `${config.name ?? manifest.source} — ${manifest.arch}, ${manifest.precision}, ` +
      `lowered for ${manifest.target}, ${manifest.attention.length} attention layers` +
      (tokenizer instanceof IdsTokenizer ? " — no tokenizer.json: prompts are token ids" : "");
    if (tokenizer instanceof IdsTokenizer && !params.has("prompt")) $("prompt").value = "1, 2, 3";
    $("prompt-label").textContent = tokenizer instanceof IdsTokenizer ? "Prompt (token ids)" : "Prompt";
    if (manifest.arch === "encoder") $("run").textContent = "Embed";
    $("run").onclick = run;
    $("run").disabled = false;
    status(`ready (${ep}, ${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? "s" : ""})`);
    document.body.dataset.ready = "1";
  } catch (e) {
    status(`error: ${String(e.message ?? e).split("\n")[0]}`, true);
    document.body.dataset.ready = "error";
  }
}

start();
