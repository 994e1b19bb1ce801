// The page's onnxruntime-web build (samples/web/vendor, WebAssembly, one thread) in Node: wall
// and CPU time of the runtime's start, the model's session start and the first run, in this
// fresh process. CPU time (user + system, all threads of the process) does not count time spent
// waiting for a shared CPU, so on a busy machine it is closer to what an idle one takes. A
// second session of the same model in the same process shows how much of the first one is the
// runtime's first use of its kernels (WebAssembly functions are compiled lazily, on first call).
//
//   node benchmarks/web_session_node.mjs MODEL.onnx      (one JSON line; see web_session.py)

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const vendor = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'samples', 'web', 'vendor', 'onnxruntime-web');
const ort = await import(path.join(vendor, 'ort.wasm.min.mjs'));
ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = vendor + path.sep;

// The same one-node model the page opens first to start the runtime.
const WARMUP = 'CAgSADo8ChAKAXgSAXkiCElkZW50aXR5EgZ3YXJtdXBaDwoBeBIKCggIARIECgIIAWIPCgF5EgoKCAgBEgQKAggBQgQKABAS';

async function timed(fn) {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await fn();
  const wall = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return [value, { wallMs: wall, cpuMs: (c.user + c.system) / 1000 }];
}

const bytes = readFileSync(process.argv[2]);
const [, runtime] = await timed(async () => (await ort.InferenceSession.create(Buffer.from(WARMUP, 'base64'))).release());
const [session, sessionStart] = await timed(() => ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' }));
const meta = session.inputMetadata[0];
const dims = meta.shape.map((d) => (typeof d === 'number' ? d : 1));
const x = new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
const [, firstRun] = await timed(() => session.run({ [meta.name]: x }));
const [again, sessionStartAgain] = await timed(() => ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' }));
await again.release();
await session.release();
console.log(JSON.stringify({ runtime, sessionStart, firstRun, sessionStartAgain }));
