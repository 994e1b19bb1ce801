// The squeeze demo page: loads model.json and the .onnx it names (or a file the user chooses),
// starts an onnxruntime-web session (the graph regenerates its weights at start), and classifies
// drawn digits, real test images or typed numbers. Everything is served from this folder.
//
// Test hook (see README.md): window.squeezeDemo = { ready, classify, scores, state }.

import * as ort from './vendor/onnxruntime-web/ort.wasm.min.mjs';
import { readOnnxHeader } from './onnxinfo.js';
import { DrawingPad } from './pad.js';

ort.env.wasm.wasmPaths = new URL('./vendor/onnxruntime-web/', import.meta.url).href;
ort.env.wasm.numThreads = 1;
ort.env.logLevel = 'error';

const MAX_GENERIC = 4096; // most numbers per example the generic input takes
// Image inputs the page draws: the pixel range of their data sets and the shipped test images.
const IMAGES = {
  '28x28': { rawMax: 255, examples: 'examples/mnist5k.json' },
  '8x8': { rawMax: 16, examples: 'examples/digits.json' },
};
// A one-node ONNX model (Identity): opening it first starts the WebAssembly runtime, so that the
// session start shown for a model is the model's own (graph load and weight regeneration).
const WARMUP = 'CAgSADo8ChAKAXgSAXkiCElkZW50aXR5EgZ3YXJtdXBaDwoBeBIKCggIARIECgIIAWIPCgF5EgoKCAgBEgQKAggBQgQKABAS';
const CHOOSE = 'Choose an .onnx file written by `squeeze export` (or `squeeze demo`).';

const $ = (id) => document.getElementById(id);
const fmt = (n) => n.toLocaleString('en-US');
const ms = (t) => `${t < 10 ? t.toFixed(2) : t.toFixed(0)} ms`;

let current = null; // {name, bytes, session, spec, sessionMs, firstRunMs, source}
let runtimeMs = null;
let status = 'loading';
let lastMessage = '';
let lastPrediction = null;
let examples = null; // {key, labels, images, rawMax, h, w}
let pad = null;

class PageError extends Error {}

function message(text, kind = 'error') {
  const el = $('message');
  lastMessage = text;
  el.textContent = text;
  el.className = kind === 'info' ? 'info' : '';
  el.hidden = !text;
}

function firstLine(e) {
  const text = String(e && e.message ? e.message : e).trim();
  // onnxruntime-web's errors start with a code and may hold a C++ source path: keep the reason.
  const reason = text.replace(/^Can't create a session\. ERROR_CODE: \d+, ERROR_MESSAGE: /, '').replace(/^\S*onnxruntime\S*:\d+ [^)]*\) /, '');
  return reason.split('\n')[0].slice(0, 300);
}

async function startRuntime() {
  const bytes = Uint8Array.from(atob(WARMUP), (c) => c.charCodeAt(0));
  const t0 = performance.now();
  const s = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
  runtimeMs = performance.now() - t0;
  await s.release();
}

/**
 * What squeeze recorded about the input: model.json, else the ONNX metadata: `squeeze.pre` (tiny
 * graphs: `x/255` or `x*SCALE` when the graph applies the preprocessing to raw inputs, `x` when it
 * takes the model's own input), `squeeze.input` (full graphs: a phrase, "raw inputs, divided by
 * 255 ..." or not) and `squeeze.data` (the .sqz file's input record). Null without any of them.
 */
function recordedInput(info, metadata) {
  if (info) return info;
  let input = null;
  try {
    input = metadata['squeeze.data'] ? JSON.parse(metadata['squeeze.data']) : null;
  } catch {
    input = null;
  }
  const pre = metadata['squeeze.pre'] || '';
  const takes = metadata['squeeze.input'] || '';
  if (!input && !pre && !takes) return null;
  input = input || {};
  const divisor = /^x\/([0-9.e+]+)$/.exec(pre) || /divided by ([0-9.e+]+)/.exec(takes);
  const times = /^x\*([0-9.e+-]+)$/.exec(pre) || /times ([0-9.e+-]+)/.exec(takes);
  if (!(input.pre && input.pre.scale)) {
    if (divisor) input.pre = { scale: 1 / Number(divisor[1]) };
    else if (times) input.pre = { scale: Number(times[1]) };
  }
  const raw = divisor !== null || times !== null;
  return { input, graph_input: raw ? 'raw' : 'preprocessed', tiny: pre ? true : null };
}

/**
 * How the page feeds a session: its input and output, the kind of input UI, the scale from
 * the user's raw values (pixels as the data set stores them) to what the graph takes.
 * @throws {PageError} an input the page does not support, said in one sentence
 */
function describe(name, session, recorded) {
  if (session.inputNames.length !== 1) {
    throw new PageError(`${name} has ${session.inputNames.length} inputs (${session.inputNames.join(', ')}); this page feeds models with one input tensor.`);
  }
  const meta = (session.inputMetadata || [])[0];
  const inputName = session.inputNames[0];
  if (!meta || !meta.isTensor) throw new PageError(`${name}'s input ${inputName} is not a tensor; this page feeds one float32 tensor.`);
  const shape = meta.shape || [];
  const shown = `[${shape.map((d) => (typeof d === 'number' && d >= 0 ? d : 'batch')).join(', ')}]`;
  if (meta.type !== 'float32') {
    throw new PageError(`${name} takes ${meta.type} input ${inputName} of shape ${shown}; this page feeds float32 tensors only (images of 28x28 or 8x8 pixels, or up to ${fmt(MAX_GENERIC)} numbers).`);
  }
  if (shape.length < 2) throw new PageError(`${name}'s input ${inputName} has shape ${shown}; this page needs a batch dimension followed by the example's dimensions.`);
  const dims = shape.slice(1);
  if (dims.some((d) => typeof d !== 'number' || d < 1)) {
    throw new PageError(`${name}'s input ${inputName} has shape ${shown} with a variable size after the batch; this page needs fixed example dimensions.`);
  }
  const batch = shape[0];
  if (typeof batch === 'number' && batch > 1) throw new PageError(`${name}'s input ${inputName} has a fixed batch of ${batch}; this page needs a batch of 1 or a variable batch.`);
  if (session.outputNames.length < 1) throw new PageError(`${name} has no output.`);
  const size = dims.reduce((a, b) => a * b, 1);
  const plain = dims.filter((d) => d !== 1);
  const key = plain.length === 2 ? `${plain[0]}x${plain[1]}` : '';
  const input = recorded ? recorded.input || {} : {};
  const scale = input.pre && typeof input.pre.scale === 'number' ? input.pre.scale : null;
  const graphRaw = recorded && recorded.graph_input === 'raw';
  const spec = { inputName, outputName: session.outputNames[0], dims, size, dynamicBatch: typeof batch !== 'number', classes: input.classes || null, note: '' };
  if (IMAGES[key] && dims.length - plain.length <= 1) {
    const rawMax = scale ? Math.round(1 / scale) : IMAGES[key].rawMax;
    Object.assign(spec, { kind: 'image', key, h: plain[0], w: plain[1], rawMax });
    if (!recorded) {
      spec.feedScale = 1 / rawMax;
      spec.note = `no squeeze metadata in this file: pixels are fed as 0..1`;
    } else {
      spec.feedScale = graphRaw ? 1 : scale || 1;
      spec.note = graphRaw ? `the graph takes raw pixels 0..${rawMax} (its preprocessing is in the graph)` : `pixels 0..${rawMax} are scaled by ${scale ? scale.toPrecision(6) : 1} before the graph`;
    }
  } else if (size <= MAX_GENERIC) {
    Object.assign(spec, { kind: 'generic', feedScale: graphRaw || !scale ? 1 : scale });
    spec.note = spec.feedScale === 1 ? 'numbers are fed as typed' : `numbers are scaled by ${scale.toPrecision(6)} before the graph`;
  } else {
    throw new PageError(`${name} takes inputs of shape ${shown} (${fmt(size)} values per example); this page draws 28x28 and 8x8 images and takes up to ${fmt(MAX_GENERIC)} numbers by hand.`);
  }
  return spec;
}

/** Run the current model on a batch of raw examples; returns one score row per example. */
async function run(batch, model = current) {
  if (!model) throw new PageError('no model is loaded');
  const { spec, session } = model;
  if (!Array.isArray(batch) && !(batch && typeof batch.length === 'number')) throw new PageError('classify takes an array of examples');
  const n = batch.length;
  if (n === 0) return [];
  const data = new Float32Array(n * spec.size);
  for (let i = 0; i < n; i++) {
    const x = batch[i];
    if (!x || x.length !== spec.size) throw new PageError(`example ${i} has ${x ? x.length : 0} values; the model takes ${spec.size} (shape [${spec.dims.join(', ')}])`);
    for (let j = 0; j < spec.size; j++) data[i * spec.size + j] = spec.feedScale === 1 ? x[j] : x[j] * spec.feedScale;
  }
  const rows = [];
  const step = spec.dynamicBatch ? n : 1;
  for (let i = 0; i < n; i += step) {
    const m = Math.min(step, n - i);
    const feeds = { [spec.inputName]: new ort.Tensor('float32', data.subarray(i * spec.size, (i + m) * spec.size), [m, ...spec.dims]) };
    const out = (await session.run(feeds))[spec.outputName];
    const k = out.data.length / m;
    for (let r = 0; r < m; r++) rows.push(Array.from(out.data.subarray(r * k, (r + 1) * k), Number));
  }
  return rows;
}

function argmax(row) {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

function probabilities(row) {
  const sum = row.reduce((a, b) => a + b, 0);
  if (row.every((v) => v >= 0 && v <= 1) && Math.abs(sum - 1) < 1e-3) return row;
  const top = Math.max(...row);
  const e = row.map((v) => Math.exp(v - top));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / z);
}

function showPrediction(row, note) {
  const p = probabilities(row);
  const best = argmax(row);
  lastPrediction = { class: best, probability: p[best] };
  $('prediction').textContent = String(best);
  $('prediction-note').textContent = `${(100 * p[best]).toFixed(1)}% ${note ? '· ' + note : ''}`;
  const bars = $('bars');
  bars.replaceChildren();
  p.forEach((v, i) => {
    const label = document.createElement('div');
    label.textContent = String(i);
    const bar = document.createElement('div');
    bar.className = 'bar';
    const fill = document.createElement('span');
    fill.style.width = `${(100 * v).toFixed(2)}%`;
    bar.append(fill);
    const pct = document.createElement('div');
    pct.className = 'p';
    pct.textContent = `${(100 * v).toFixed(1)}%`;
    if (i === best) [label, pct].forEach((el) => el.classList.add('top'));
    bars.append(label, bar, pct);
  });
}

function clearPrediction() {
  lastPrediction = null;
  $('prediction').textContent = '–';
  $('prediction-note').textContent = '';
  $('bars').replaceChildren();
}

async function classifyShown(raw, note) {
  try {
    const [row] = await run([raw]);
    showPrediction(row, note);
  } catch (e) {
    message(`Could not run ${current.name}: ${firstLine(e)}`);
  }
}

function onStroke() {
  const { spec } = current;
  const grid = pad.grid(spec.h, spec.w);
  const raw = Array.from(grid, (v) => Math.round(v * spec.rawMax));
  document.querySelectorAll('.examples canvas').forEach((c) => c.classList.remove('chosen'));
  classifyShown(raw, 'your drawing');
}

async function loadExamples(spec) {
  const row = $('examples');
  if (examples && examples.key === spec.key) return;
  row.replaceChildren();
  examples = null;
  try {
    const res = await fetch(IMAGES[spec.key].examples);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const ex = await res.json();
    examples = { key: spec.key, ...ex };
  } catch (e) {
    row.textContent = `(no test images: ${firstLine(e)})`;
    return;
  }
  examples.images.forEach((img, i) => {
    const c = document.createElement('canvas');
    c.width = examples.w;
    c.height = examples.h;
    c.title = `test image, label ${examples.labels[i]}`;
    const ctx = c.getContext('2d');
    const data = ctx.createImageData(examples.w, examples.h);
    img.forEach((v, j) => {
      const g = Math.round((255 * v) / examples.raw_max);
      data.data.set([g, g, g, 255], 4 * j);
    });
    ctx.putImageData(data, 0, 0);
    c.addEventListener('click', () => {
      document.querySelectorAll('.examples canvas').forEach((o) => o.classList.remove('chosen'));
      c.classList.add('chosen');
      const s = current.spec;
      const raw = img.map((v) => Math.round((v * s.rawMax) / examples.raw_max));
      pad.show(raw.map((v) => v / s.rawMax), s.h, s.w);
      classifyShown(raw, `test image labelled ${examples.labels[i]}`);
    });
    row.append(c);
  });
}

function showModel() {
  const m = current;
  const { spec } = m;
  $('model-name').textContent = m.name;
  $('model-bytes').textContent = `${fmt(m.bytes)} bytes`;
  const how = m.tiny === true ? ' (the graph regenerates its weights)' : m.tiny === false ? ' (weights stored in the file)' : '';
  $('session-ms').textContent = `${ms(m.sessionMs)}${how}`;
  $('first-run-ms').textContent = ms(m.firstRunMs);
  $('model-input').textContent = `${spec.inputName} [batch, ${spec.dims.join(', ')}] float32 · ${spec.note}`;
  $('model-source').textContent = m.source;
  $('runtime').textContent = `onnxruntime-web ${ort.env.versions?.web ?? ''} (WebAssembly, 1 thread; runtime start ${ms(runtimeMs)})`;
  document.title = `squeeze: a ${fmt(m.bytes)}-byte model in your browser`;
  $('image-ui').hidden = spec.kind !== 'image';
  $('generic-ui').hidden = spec.kind !== 'generic';
  clearPrediction();
  if (spec.kind === 'image') {
    pad.clear();
    loadExamples(spec);
  } else {
    $('generic-hint').textContent = `${fmt(spec.size)} numbers (shape [${spec.dims.join(', ')}]), separated by spaces or commas; ${spec.note}.`;
    $('generic-values').value = Array(spec.size).fill('0').join(' ');
  }
}

function describeSource(name, recorded, info) {
  if (info && info.sqz) {
    const s = info.sqz;
    const accuracy = typeof s.test_accuracy === 'number' ? `, test accuracy ${s.test_accuracy}` : '';
    return `${s.file}: ${fmt(s.bytes)} bytes as .sqz, D = ${fmt(s.D)} weights from d = ${fmt(s.d)} (${s.projection}), ${s.arch}${accuracy}`;
  }
  if (recorded) {
    const kind = recorded.tiny ? 'a tiny graph from squeeze export' : 'squeeze export';
    return recorded.input && recorded.input.name ? `${kind}, a ${recorded.input.name} model` : kind;
  }
  return 'an ONNX file without squeeze metadata';
}

/**
 * Open a model from its bytes; the page keeps the previous model if this one fails.
 * @returns {Promise<boolean>} whether the model was loaded
 */
async function loadModel(name, bytes, info = null) {
  let header;
  try {
    header = readOnnxHeader(bytes);
  } catch (e) {
    message(`${name} (${fmt(bytes.length)} bytes) is not an ONNX model, or a damaged one (${firstLine(e)}). ${CHOOSE}`);
    return false;
  }
  const recorded = recordedInput(info, header.metadata);
  let session;
  const t0 = performance.now();
  try {
    session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  } catch (e) {
    message(`onnxruntime-web could not open ${name} (${fmt(bytes.length)} bytes): ${firstLine(e)}. ${CHOOSE}`);
    return false;
  }
  const sessionMs = performance.now() - t0;
  let spec;
  let firstRunMs;
  try {
    spec = describe(name, session, recorded);
    const t1 = performance.now();
    await run([new Float32Array(spec.size)], { spec, session });
    firstRunMs = performance.now() - t1;
  } catch (e) {
    await session.release();
    const kept = current ? ` The page keeps ${current.name}.` : '';
    message(e instanceof PageError ? e.message + kept : `${name} does not run in onnxruntime-web: ${firstLine(e)}.${kept}`);
    return false;
  }
  const previous = current;
  const tiny = recorded && typeof recorded.tiny === 'boolean' ? recorded.tiny : null;
  current = { name, bytes: bytes.length, session, spec, sessionMs, firstRunMs, tiny, source: describeSource(name, recorded, info) };
  if (previous) await previous.session.release();
  message('');
  showModel();
  return true;
}

async function loadDefault() {
  const res = await fetch('model.json');
  if (!res.ok) throw new PageError(`there is no model.json next to this page (HTTP ${res.status}); open an .onnx file below.`);
  const info = await res.json();
  const modelRes = await fetch(info.model);
  if (!modelRes.ok) throw new PageError(`model.json names ${info.model}, which the server does not have (HTTP ${modelRes.status}).`);
  const bytes = new Uint8Array(await modelRes.arrayBuffer());
  if (!(await loadModel(info.model, bytes, info))) throw new PageError(lastMessage);
}

function onFile(e) {
  const file = e.target.files && e.target.files[0];
  if (!file) return;
  file.arrayBuffer().then(
    (buf) => loadModel(file.name, new Uint8Array(buf)),
    (err) => message(`Could not read ${file.name}: ${firstLine(err)}.`),
  );
  e.target.value = '';
}

function onGenericRun() {
  const text = $('generic-values').value.trim();
  const values = text ? text.split(/[\s,]+/).map(Number) : [];
  if (values.length !== current.spec.size || values.some((v) => !Number.isFinite(v))) {
    message(`The input needs ${fmt(current.spec.size)} numbers; got ${fmt(values.length)}${values.some((v) => !Number.isFinite(v)) ? ', some of which are not numbers' : ''}.`);
    return;
  }
  message('');
  classifyShown(values, 'your numbers');
}

async function main() {
  pad = new DrawingPad($('pad'), onStroke);
  $('clear').addEventListener('click', () => {
    pad.clear();
    clearPrediction();
  });
  $('file-input').addEventListener('change', onFile);
  $('generic-run').addEventListener('click', onGenericRun);
  try {
    await startRuntime();
  } catch (e) {
    status = 'error';
    message(`onnxruntime-web did not start in this browser: ${firstLine(e)}.`);
    return;
  }
  try {
    await loadDefault();
    status = 'ready';
  } catch (e) {
    status = 'error';
    if (!lastMessage) message(e instanceof PageError ? e.message : `Could not load the default model: ${firstLine(e)}.`);
    $('model-name').textContent = 'none';
  }
}

window.squeezeDemo = {
  /** Settles when the default model is loaded (or failed to: see state().message). */
  ready: null,
  /** Predicted classes of a batch of raw examples (pixels as the data set stores them). */
  classify: async (batch) => (await run(batch)).map(argmax),
  /** The model's output rows for a batch of raw examples. */
  scores: (batch) => run(batch),
  /** What the page shows: status, model, sizes, times, input spec, message, last prediction. */
  state: () => ({
    status,
    model: current && current.name,
    bytes: current && current.bytes,
    sessionMs: current && current.sessionMs,
    firstRunMs: current && current.firstRunMs,
    tiny: current && current.tiny,
    runtimeMs,
    input: current && { ...current.spec },
    message: lastMessage,
    prediction: lastPrediction,
  }),
};
window.squeezeDemo.ready = main();
