// onnxruntime-web worker for fastattn (Node): one JSON request on stdin, one JSON answer as the last
// stdout line, like `python -m fastattn.bench.worker`: {"ok": true, "result": ...} or
// {"ok": false, "error": "<one line>", "exit_code": N}. Python prepares everything (inputs from the
// manifest, as raw little-endian files) and reads the answer: fastattn/runtime/web/node.py.
//
// FASTATTN_ORT_WEB names the onnxruntime-web package directory (make web-env installs it, pinned).
//
// Requests:
//   {"op": "probe"}  -> {"onnxruntime_web", "node", "available": [...], "missing": {provider: why}}
//   {"op": "phases", "provider", "threads", "graphs": {name: {file, disabled_optimizers, mem_pattern}},
//    "settings": {warmup, repeats, min_time, max_repeats, pause},
//    "phases": [{"name", "graph", "inputs": [tensor]} | {"name": "decode", "graph", "steps": [[tensor]], "cache"}]}
//      -> {"phases": [{"name", "samples_ms", "warmup_runs"}], "baseline_rss_mb", "peak_rss_mb"}
//      A decode phase starts from the presents of the phase before it on the same graph.
//   {"op": "candidates", "provider", "threads", "models": {rule: file}, "reference": rule,
//    "cases": [{"name", "inputs": [tensor]}], "repeats", "rounds"}
//      -> {"failed": {rule: why}, "cases": [{"name", "results": {rule: {ms, max_abs, scale} | {error}}}]}
//   A tensor is {"name", "dtype", "dims", "file"} (raw bytes of that dtype).

import { existsSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { pathToFileURL } from "node:url";

const ARRAYS = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array, uint8: Uint8Array, bool: Uint8Array };

async function loadOrt() {
  const dir = process.env.FASTATTN_ORT_WEB;
  if (!dir) throw new Error("FASTATTN_ORT_WEB is not set (the onnxruntime-web package directory)");
  const ort = await import(pathToFileURL(join(dir, "dist", "ort.node.min.mjs")).href);
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  ort.env.logLevel = "error";
  return { ort, version: pkg.version };
}

function tensor(ort, spec) {
  const bytes = readFileSync(spec.file);
  const Array_ = ARRAYS[spec.dtype];
  if (!Array_) throw new Error(`dtype ${spec.dtype} of ${spec.name} is not handled`);
  const data = new Array_(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  return new ort.Tensor(spec.dtype, data, spec.dims);
}

function feeds(ort, specs) {
  return Object.fromEntries(specs.map((s) => [s.name, tensor(ort, s)]));
}

async function session(ort, request, graph) {
  ort.env.wasm.numThreads = request.threads ?? 1;
  const options = { executionProviders: [request.provider], graphOptimizationLevel: "all" };
  if (graph.mem_pattern === false) options.enableMemPattern = false;
  if (graph.disabled_optimizers?.length) {
    options.extra = { "optimization.disable_specified_optimizers": graph.disabled_optimizers.join(";") };
  }
  const data = `${graph.file}.data`; // weights beside the graph (fastattn/onnx_files.py), named in it by base name
  if (existsSync(data)) options.externalData = [{ path: basename(data), data: readFileSync(data) }];
  return ort.InferenceSession.create(readFileSync(graph.file), options);
}

const sleep = (s) => new Promise((resolve) => setTimeout(resolve, s * 1000));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const rssMb = () => process.memoryUsage().rss / 2 ** 20;

// A block as fastattn.bench.measure.time_rounds: pause, warm-up (at least `warmup` runs and two rounds,
// on while runs still change by over 1.5x, up to 10 s), then rounds until `repeats` samples and `min_time` s.
async function timeRounds(round, settings, perRound = 1) {
  await sleep(settings.pause);
  let warm = 0;
  if (settings.warmup > 0) {
    const need = Math.max(Math.ceil(settings.warmup / perRound), 2), times = [], start = performance.now();
    const settling = () => times.at(-1) * 1.5 < times.at(-2) || times.at(-1) > 1.5 * Math.min(...times);
    while (times.length < need || (settling() && performance.now() - start < 10_000)) {
      const t = performance.now();
      await round(null);
      times.push(performance.now() - t);
    }
    warm = times.length * perRound;
  }
  const samples = [], start = performance.now();
  while (samples.length < settings.max_repeats &&
         (samples.length < settings.repeats || performance.now() - start < settings.min_time * 1000)) await round(samples);
  return { samples, warm };
}

async function phases(request) {
  const { ort, version } = await loadOrt();
  const baseline = rssMb();
  const sessions = {};
  for (const [name, graph] of Object.entries(request.graphs)) sessions[name] = await session(ort, request, graph);
  const results = [], lastOut = {};
  for (const phase of request.phases) {
    const s = sessions[phase.graph];
    let timedRound, perRound = 1;
    if (phase.name === "decode") {
      const start = lastOut[phase.graph];
      if (!start) throw new Error(`decode on ${phase.graph} needs a phase before it`);
      const steps = phase.steps.map((specs) => feeds(ort, specs));
      perRound = steps.length;
      timedRound = async (samples) => {
        let past = start;
        for (const inputs of steps) {
          const t = performance.now();
          const out = await s.run({ ...inputs, ...past });
          past = Object.fromEntries(phase.cache.map((p) => [p.past, out[p.present]]));
          if (samples) samples.push(performance.now() - t);
        }
      };
    } else {
      const inputs = feeds(ort, phase.inputs);
      timedRound = async (samples) => {
        const t = performance.now();
        await s.run(inputs);
        if (samples) samples.push(performance.now() - t);
      };
      if (phase.cache?.length) {
        const out = await s.run(inputs);
        lastOut[phase.graph] = Object.fromEntries(phase.cache.map((p) => [p.past, out[p.present]]));
      }
    }
    const { samples, warm } = await timeRounds(timedRound, request.settings, perRound);
    results.push({ name: phase.name, samples_ms: samples, warmup_runs: warm });
  }
  const peak = process.resourceUsage().maxRSS / 1024; // kB -> MB: the process's high-water mark
  return { phases: results, baseline_rss_mb: baseline, peak_rss_mb: peak, onnxruntime_web: version };
}

async function candidates(request) {
  const { ort } = await loadOrt();
  const sessions = {}, failed = {};
  for (const [rule, file] of Object.entries(request.models)) {
    try {
      sessions[rule] = await session(ort, request, { file });
    } catch (e) {
      failed[rule] = String(e.message ?? e).split("\n")[0].slice(0, 300);
    }
  }
  if (!sessions[request.reference]) throw new Error(`the reference ${request.reference} does not load: ${failed[request.reference]}`);
  const cases = [];
  for (const c of request.cases) {
    const inputs = feeds(ort, c.inputs);
    const ref = await sessions[request.reference].run(inputs);
    const results = {}, ok = [];
    for (const [rule, s] of Object.entries(sessions)) {
      try {
        const got = await s.run(inputs);
        let maxAbs = 0, scale = 0;
        for (const [name, want] of Object.entries(ref)) {
          const a = got[name].data, b = want.data;
          if (a.length !== b.length) throw new Error(`output ${name} has ${a.length} values, not ${b.length}`);
          for (let i = 0; i < b.length; i++) {
            const x = Number(a[i]), y = Number(b[i]); // int64 outputs are BigInts
            maxAbs = Math.max(maxAbs, Math.abs(x - y));
            scale = Math.max(scale, Math.abs(y));
          }
        }
        results[rule] = { max_abs: maxAbs, scale };
        ok.push(rule);
      } catch (e) {
        results[rule] = { error: `failed to run: ${String(e.message ?? e).split("\n")[0]}`.slice(0, 300) };
      }
    }
    // rounds alternate the order; a pause before each session's runs (as lowering/measure.py)
    const perRound = Object.fromEntries(ok.map((r) => [r, []]));
    for (let round = 0; round < request.rounds; round++) {
      for (const rule of round % 2 ? [...ok].reverse() : ok) {
        await sleep(0.02);
        for (let i = 0; i < 2; i++) await sessions[rule].run(inputs);
        const times = [];
        for (let i = 0; i < request.repeats; i++) {
          const t = performance.now();
          await sessions[rule].run(inputs);
          times.push(performance.now() - t);
        }
        perRound[rule].push(median(times));
      }
    }
    for (const rule of ok) results[rule].ms = median(perRound[rule]);
    cases.push({ name: c.name, results });
  }
  return { failed, cases };
}

async function probe() {
  const { ort, version } = await loadOrt();
  const missing = {};
  if (!globalThis.navigator?.gpu) missing.webgpu = `no WebGPU adapter in Node ${process.version} (navigator.gpu is undefined)`;
  missing.webnn = "WebNN exists only in browsers";
  const available = ["wasm", ...(missing.webgpu ? [] : ["webgpu"])];
  return { onnxruntime_web: version, node: process.version, available, missing, env: { simd: true, threads: true } };
}

const OPS = { probe, phases, candidates };

async function main() {
  let request;
  try {
    request = JSON.parse(readFileSync(0, "utf8"));
  } catch (e) {
    return { ok: false, error: `bad request: ${e.message}`, exit_code: 2 };
  }
  const op = OPS[request.op];
  if (!op) return { ok: false, error: `unknown request op ${JSON.stringify(request.op)}`, exit_code: 2 };
  try {
    return { ok: true, result: await op(request) };
  } catch (e) {
    process.stderr.write(`${e.stack ?? e}\n`);
    return { ok: false, error: String(e.message ?? e).split("\n")[0], type: "WebError", exit_code: 1 };
  }
}

const reply = await main();
process.stdout.write(JSON.stringify(reply) + "\n");
process.exit(reply.ok ? 0 : reply.exit_code);
