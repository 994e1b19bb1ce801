// Drives the squeeze demo page in headless chromium (puppeteer-core) for tests/test_web.py.
//
//   node tests/web/drive.mjs JOB.json
//
// JOB.json: {url, chromium, images: [[raw pixels]...], out (folder for screenshots),
//            bad: [path of a file to choose through the page's file input, ...],
//            other: {file, images} (optional: a model to open through the file input, then
//            classify its images and click its first test image),
//            generic: {file, values} (optional: a model of another input shape; its numbers are
//            typed into the page's input box and run with the Run button),
//            reloads: N (optional: only load the page N times and report each load's state)}
// Prints one JSON line: the page's state after loading, the predictions and scores of the
// images through window.squeezeDemo, the bytes of every response, the drawn digit's
// prediction, the message shown for each bad file, the other model's state, predictions and
// clicked test image, and the page's console errors.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const result = { responses: {}, consoleErrors: [], bad: [] };
const browser = await puppeteer.launch({
  executablePath: job.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check'],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1100, height: 900 });
  page.on('console', (m) => { if (m.type() === 'error') result.consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => result.consoleErrors.push(String(e)));
  page.on('requestfailed', (r) => result.consoleErrors.push(`request failed: ${r.url()}`));
  page.on('response', async (r) => {
    try {
      result.responses[new URL(r.url()).pathname] = { status: r.status(), bytes: (await r.buffer()).length };
    } catch { /* a response without a body */ }
  });
  const load = async () => {
    await page.goto(job.url, { waitUntil: 'load' });
    await page.waitForFunction(() => typeof window.squeezeDemo === 'object', { timeout: 30000 });
    return page.evaluate(() => window.squeezeDemo.ready.then(() => window.squeezeDemo.state()));
  };
  result.state = await load();
  if (job.reloads) {
    result.loads = [result.state];
    for (let i = 1; i < job.reloads; i++) result.loads.push(await load());
  } else if (result.state.status === 'ready') {
    result.predictions = await page.evaluate((b) => window.squeezeDemo.classify(b), job.images);
    result.scores = await page.evaluate((b) => window.squeezeDemo.scores(b), job.images);

    // A "7" drawn with real mouse events: a top bar, then a diagonal down to the left.
    const box = await (await page.$('#pad')).boundingBox();
    const at = (fx, fy) => [box.x + fx * box.width, box.y + fy * box.height];
    const stroke = [[0.28, 0.22], [0.72, 0.22], [0.62, 0.45], [0.5, 0.8]];
    await page.mouse.move(...at(...stroke[0]));
    await page.mouse.down();
    for (let i = 1; i < stroke.length; i++) {
      const [x0, y0] = stroke[i - 1];
      const [x1, y1] = stroke[i];
      for (let s = 1; s <= 10; s++) await page.mouse.move(...at(x0 + ((x1 - x0) * s) / 10, y0 + ((y1 - y0) * s) / 10));
    }
    await page.mouse.up();
    await page.waitForFunction(() => window.squeezeDemo.state().prediction !== null, { timeout: 20000 });
    result.drawn = await page.evaluate(() => ({
      prediction: window.squeezeDemo.state().prediction,
      shown: document.getElementById('prediction').textContent,
      bars: document.querySelectorAll('#bars .bar').length,
      note: document.getElementById('prediction-note').textContent,
    }));
    await page.screenshot({ path: path.join(job.out, 'drawn.png'), fullPage: true });
  }

  for (const file of job.bad || []) {
    await page.evaluate(() => { document.getElementById('message').hidden = true; });
    const input = await page.$('#file-input');
    await input.uploadFile(file);
    await page.waitForFunction(() => !document.getElementById('message').hidden, { timeout: 30000 });
    result.bad.push(await page.evaluate((f) => ({
      file: f,
      message: document.getElementById('message').textContent,
      visible: !document.getElementById('message').hidden,
      model: window.squeezeDemo.state().model,
    }), path.basename(file)));
    await page.screenshot({ path: path.join(job.out, `bad-${result.bad.length}.png`), fullPage: true });
  }

  if (job.other) {
    const name = path.basename(job.other.file);
    await (await page.$('#file-input')).uploadFile(job.other.file);
    await page.waitForFunction((n) => window.squeezeDemo.state().model === n || !document.getElementById('message').hidden, { timeout: 30000 }, name);
    const other = { state: await page.evaluate(() => window.squeezeDemo.state()) };
    if (other.state.model === name) {
      other.predictions = await page.evaluate((b) => window.squeezeDemo.classify(b), job.other.images);
      await page.waitForSelector('#examples canvas', { timeout: 20000 });
      other.examples = await page.$$eval('#examples canvas', (cs) => cs.map((c) => [c.width, c.height]));
      await page.click('#examples canvas');
      await page.waitForFunction(() => window.squeezeDemo.state().prediction !== null, { timeout: 20000 });
      other.clicked = await page.evaluate(() => ({ prediction: window.squeezeDemo.state().prediction, note: document.getElementById('prediction-note').textContent }));
      await page.screenshot({ path: path.join(job.out, 'other.png'), fullPage: true });
    }
    result.other = other;
  }

  if (job.generic) {
    const name = path.basename(job.generic.file);
    await (await page.$('#file-input')).uploadFile(job.generic.file);
    await page.waitForFunction((n) => window.squeezeDemo.state().model === n || !document.getElementById('message').hidden, { timeout: 30000 }, name);
    const generic = { state: await page.evaluate(() => window.squeezeDemo.state()) };
    if (generic.state.model === name) {
      generic.visible = await page.evaluate(() => ({ generic: !document.getElementById('generic-ui').hidden, image: !document.getElementById('image-ui').hidden }));
      await page.click('#generic-values', { count: 3 });
      await page.$eval('#generic-values', (el) => { el.value = ''; });
      await page.type('#generic-values', job.generic.values.join(' '));
      await page.click('#generic-run');
      await page.waitForFunction(() => window.squeezeDemo.state().prediction !== null, { timeout: 20000 });
      generic.prediction = await page.evaluate(() => window.squeezeDemo.state().prediction);
      await page.screenshot({ path: path.join(job.out, 'generic.png'), fullPage: true });
    }
    result.generic = generic;
  }
} catch (e) {
  result.error = String(e && e.message ? e.message : e).split('\n')[0];
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
