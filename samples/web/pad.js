// The drawing pad: pointer strokes (white ink on black) on a large canvas, turned into an
// H x W grid of ink intensities in [0, 1] the way MNIST digits were made: the ink's bounding
// box is scaled to fit a 20x20 box and centred by its centre of mass in 28x28. Smaller grids
// (the 8x8 digits) are filled by the ink's bounding box and centred by it.

export class DrawingPad {
  /**
   * @param {HTMLCanvasElement} canvas the pad
   * @param {function(): void} onStroke called when a stroke ends
   */
  constructor(canvas, onStroke) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { willReadFrequently: true });
    this.onStroke = onStroke;
    this.drawing = false;
    this.showing = false; // an example image is shown: the next stroke starts on a clear pad
    this.clear();
    canvas.addEventListener('pointerdown', (e) => this.down(e));
    canvas.addEventListener('pointermove', (e) => this.move(e));
    canvas.addEventListener('pointerup', (e) => this.up(e));
    canvas.addEventListener('pointercancel', (e) => this.up(e));
  }

  clear() {
    this.ctx.fillStyle = '#000';
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.inked = false;
    this.showing = false;
  }

  point(e) {
    const r = this.canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * (this.canvas.width / r.width), (e.clientY - r.top) * (this.canvas.height / r.height)];
  }

  down(e) {
    if (this.showing) this.clear();
    this.drawing = true;
    this.canvas.setPointerCapture(e.pointerId);
    const [x, y] = this.point(e);
    this.last = [x, y];
    this.stroke(x, y);
  }

  move(e) {
    if (!this.drawing) return;
    const [x, y] = this.point(e);
    this.stroke(x, y);
  }

  up(e) {
    if (!this.drawing) return;
    this.drawing = false;
    if (this.canvas.hasPointerCapture(e.pointerId)) this.canvas.releasePointerCapture(e.pointerId);
    this.onStroke();
  }

  stroke(x, y) {
    const ctx = this.ctx;
    ctx.strokeStyle = '#fff';
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
    ctx.lineWidth = this.canvas.width / 12;
    ctx.beginPath();
    ctx.moveTo(this.last[0], this.last[1]);
    ctx.lineTo(x + 0.01, y);
    ctx.stroke();
    this.last = [x, y];
    this.inked = true;
  }

  /**
   * Show an image (row-major intensities in [0, 1]) enlarged on the pad.
   * @param {ArrayLike<number>} grid h * w values
   */
  show(grid, h, w) {
    this.clear();
    const cw = this.canvas.width / w;
    const ch = this.canvas.height / h;
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) {
        const v = Math.round(255 * Math.min(1, Math.max(0, grid[i * w + j])));
        this.ctx.fillStyle = `rgb(${v},${v},${v})`;
        this.ctx.fillRect(j * cw, i * ch, Math.ceil(cw), Math.ceil(ch));
      }
    }
    this.showing = true;
  }

  /**
   * The drawing as an h x w grid of intensities in [0, 1], row-major.
   * @returns {Float64Array} all zeros when nothing is drawn
   */
  grid(h, w) {
    const W = this.canvas.width;
    const H = this.canvas.height;
    const px = this.ctx.getImageData(0, 0, W, H).data;
    const ink = new Float64Array(W * H);
    let x0 = W, y0 = H, x1 = -1, y1 = -1;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const v = px[4 * (y * W + x)] / 255;
        ink[y * W + x] = v;
        if (v > 0) {
          if (x < x0) x0 = x;
          if (x > x1) x1 = x;
          if (y < y0) y0 = y;
          if (y > y1) y1 = y;
        }
      }
    }
    const out = new Float64Array(h * w);
    if (x1 < 0) return out;
    const box = h === 28 && w === 28 ? 20 : Math.min(h, w);
    const bw = x1 - x0 + 1;
    const bh = y1 - y0 + 1;
    const scale = box / Math.max(bw, bh);
    const tw = Math.max(1, Math.min(w, Math.round(bw * scale)));
    const th = Math.max(1, Math.min(h, Math.round(bh * scale)));
    // Area average of the ink's bounding box into tw x th cells.
    const patch = new Float64Array(tw * th);
    for (let ty = 0; ty < th; ty++) {
      const sy0 = y0 + Math.floor((ty * bh) / th);
      const sy1 = Math.max(sy0 + 1, y0 + Math.floor(((ty + 1) * bh) / th));
      for (let tx = 0; tx < tw; tx++) {
        const sx0 = x0 + Math.floor((tx * bw) / tw);
        const sx1 = Math.max(sx0 + 1, x0 + Math.floor(((tx + 1) * bw) / tw));
        let sum = 0;
        for (let sy = sy0; sy < sy1; sy++) for (let sx = sx0; sx < sx1; sx++) sum += ink[sy * W + sx];
        patch[ty * tw + tx] = sum / ((sy1 - sy0) * (sx1 - sx0));
      }
    }
    let ox = Math.floor((w - tw) / 2);
    let oy = Math.floor((h - th) / 2);
    if (box < Math.min(h, w)) {
      // Centre of mass at the grid's centre, as MNIST's digits are.
      let m = 0, mx = 0, my = 0;
      for (let ty = 0; ty < th; ty++) for (let tx = 0; tx < tw; tx++) {
        const v = patch[ty * tw + tx];
        m += v; mx += v * tx; my += v * ty;
      }
      if (m > 0) {
        ox = Math.round(w / 2 - mx / m - 0.5);
        oy = Math.round(h / 2 - my / m - 0.5);
      }
      ox = Math.min(Math.max(ox, 0), w - tw);
      oy = Math.min(Math.max(oy, 0), h - th);
    }
    for (let ty = 0; ty < th; ty++) for (let tx = 0; tx < tw; tx++) out[(oy + ty) * w + ox + tx] = patch[ty * tw + tx];
    return out;
  }
}
