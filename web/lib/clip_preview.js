// Histogram of the last depth with draggable near/far handles, and the clipped depth redrawn as the handles move.
//
// The histogram's 256 bins span the gray levels 0..1 of the node's unclipped depth picture (near = white). A handle
// sits at a gray level; the node's widgets hold either that level ("absolute" mode) or, in a percentile mode, the
// share of pixels darker than it (in percent when the widget's range goes past 1).
import { addStyle, loadImage, makeElement, pixelsOf } from "./view.js";

const BINS = 256;
const HISTOGRAM_CSS_HEIGHT = 72;
const HANDLE_COLORS = { near: "#f59e0b", far: "#38bdf8" };

export function isPercentileMode(mode) {
  return typeof mode === "string" && mode.toLowerCase().includes("percent");
}

export function cumulative(counts) {
  const cdf = new Float64Array(counts.length + 1);
  for (let i = 0; i < counts.length; i++) cdf[i + 1] = cdf[i] + Math.max(0, counts[i]);
  return cdf;
}

/** Widget value for a handle at gray level `position` (0..1). */
export function positionToValue(position, mode, cdf, range) {
  if (!isPercentileMode(mode)) return clampTo(position, range);
  const total = cdf[cdf.length - 1] || 1;
  const bin = position * (cdf.length - 1);
  const low = Math.floor(bin);
  const high = Math.min(low + 1, cdf.length - 1);
  const share = (cdf[low] + (cdf[high] - cdf[low]) * (bin - low)) / total;
  const scale = (range?.max ?? 1) > 1 ? 100 : 1;
  return clampTo(share * scale, range);
}

/** Gray level (0..1) of a handle whose widget holds `value`. */
export function valueToPosition(value, mode, cdf, range) {
  if (!Number.isFinite(value)) return null;
  if (!isPercentileMode(mode)) return Math.min(1, Math.max(0, value));
  const total = cdf[cdf.length - 1] || 1;
  const scale = (range?.max ?? 1) > 1 ? 100 : 1;
  const target = Math.min(1, Math.max(0, value / scale)) * total;
  for (let i = 1; i < cdf.length; i++) {
    if (cdf[i] >= target) {
      const within = cdf[i] > cdf[i - 1] ? (target - cdf[i - 1]) / (cdf[i] - cdf[i - 1]) : 1;
      return (i - 1 + within) / (cdf.length - 1);
    }
  }
  return 1;
}

function clampTo(value, range) {
  let result = value;
  if (Number.isFinite(range?.min)) result = Math.max(range.min, result);
  if (Number.isFinite(range?.max)) result = Math.min(range.max, result);
  const step = range?.round ?? range?.step2 ?? null;
  if (step && step > 0) result = Math.round(result / step) * step;
  return Number(result.toFixed(4));
}

/** 256-entry lookup table: the clip then stretch the node applies, for a preview without a re-run. */
export function clipTable(near, far, invert) {
  const low = Math.min(near, far);
  const high = Math.max(near, far);
  const span = Math.max(high - low, 1 / 1024);
  const table = new Uint8ClampedArray(256);
  for (let level = 0; level < 256; level++) {
    let value = Math.min(1, Math.max(0, (level / 255 - low) / span));
    if (invert) value = 1 - value;
    table[level] = Math.round(value * 255);
  }
  return table;
}

export class ClipPreview {
  constructor({ readWidget, widgetRange, writeWidget, onResize }) {
    addStyle();
    this.readWidget = readWidget;
    this.widgetRange = widgetRange;
    this.writeWidget = writeWidget;
    this.onResize = onResize;
    this.counts = null;
    this.positions = { near: 1, far: 0 };
    this.dragging = null;

    this.element = makeElement("div", "depthtoolkit-preview depthtoolkit-clip");
    this.empty = makeElement("div", "depthtoolkit-empty", this.element);
    this.empty.textContent = "Run the workflow to see the depth histogram; then drag near/far to preview the clip.";
    this.previewCanvas = makeElement("canvas", "depthtoolkit-clip-image", this.element);
    this.histogramCanvas = makeElement("canvas", "depthtoolkit-histogram", this.element);
    this.caption = makeElement("div", "depthtoolkit-caption", this.element);
    this.previewCanvas.style.display = "none";
    this.histogramCanvas.style.display = "none";

    this.histogramCanvas.addEventListener("pointerdown", (event) => this.startDrag(event));
    this.histogramCanvas.addEventListener("pointermove", (event) => this.drag(event));
    this.histogramCanvas.addEventListener("pointerup", (event) => this.endDrag(event));
    this.histogramCanvas.addEventListener("pointercancel", (event) => this.endDrag(event));
  }

  minHeight() {
    if (!this.counts) return 40;
    const width = this.element.clientWidth || 300;
    const image = this.source ? (width * this.source.height) / this.source.width : 0;
    return Math.ceil(image + HISTOGRAM_CSS_HEIGHT + 32);
  }

  async show(histogram, imageRef) {
    this.counts = Array.from(histogram.counts ?? [], Number);
    this.mode = histogram.mode ?? this.readWidget("mode");
    this.cdf = cumulative(this.counts);
    for (const name of ["near", "far"]) {
      const position = valueToPosition(Number(histogram[name]), this.mode, this.cdf, this.widgetRange(name));
      if (position !== null) this.positions[name] = position;
    }
    this.source = null;
    if (imageRef) {
      try {
        this.source = pixelsOf(await loadImage(imageRef));
      } catch (error) {
        console.warn("Depth Toolkit: could not load the depth preview", error);
      }
    }
    this.empty.style.display = "none";
    this.histogramCanvas.style.display = "block";
    this.previewCanvas.style.display = this.source ? "block" : "none";
    if (this.source) {
      this.previewCanvas.width = this.source.width;
      this.previewCanvas.height = this.source.height;
      this.previewPixels = new ImageData(this.source.width, this.source.height);
    }
    this.redraw();
    this.onResize?.();
  }

  redraw() {
    this.drawPreview();
    this.drawHistogram();
    const { near, far } = this.positions;
    const percent = isPercentileMode(this.mode);
    const nearValue = positionToValue(near, this.mode, this.cdf, this.widgetRange("near"));
    const farValue = positionToValue(far, this.mode, this.cdf, this.widgetRange("far"));
    this.caption.textContent = `near ${nearValue}${percent ? " (percentile)" : ""} · far ${farValue}` +
      " — preview only: queue the prompt to apply";
    this.element.dataset.near = String(nearValue);
    this.element.dataset.far = String(farValue);
  }

  drawPreview() {
    if (!this.source) return;
    const table = clipTable(this.positions.near, this.positions.far, Boolean(this.readWidget("invert")));
    const from = this.source.data;
    const to = this.previewPixels.data;
    for (let i = 0; i < from.length; i += 4) {
      // Depth pictures are gray (R = G = B); the mean keeps a colored input meaningful too
      const level = (from[i] + from[i + 1] + from[i + 2] + 1) / 3 | 0;
      const value = table[level];
      to[i] = value; to[i + 1] = value; to[i + 2] = value; to[i + 3] = 255;
    }
    this.previewCanvas.getContext("2d").putImageData(this.previewPixels, 0, 0);
  }

  drawHistogram() {
    const canvas = this.histogramCanvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(64, Math.round((canvas.clientWidth || 300) * ratio));
    const height = Math.round(HISTOGRAM_CSS_HEIGHT * ratio);
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const context = canvas.getContext("2d");
    context.fillStyle = "#111";
    context.fillRect(0, 0, width, height);
    // Scale to the 98th-percentile bin, not the tallest: one spike (e.g. a flat background) would flatten the rest
    const heights = this.counts.map((count) => Math.sqrt(Math.max(0, count)));
    const sorted = [...heights].sort((a, b) => a - b);
    const peak = Math.max(1, sorted[Math.floor(sorted.length * 0.98)] ?? 1);
    const barWidth = width / BINS;
    for (let bin = 0; bin < BINS; bin++) {
      const bar = Math.min(1, (heights[bin] ?? 0) / peak) * (height - 14);
      const level = Math.round((bin / (BINS - 1)) * 200 + 40);
      context.fillStyle = `rgb(${level},${level},${level})`;
      context.fillRect(bin * barWidth, height - bar, Math.ceil(barWidth), bar);
    }
    const low = Math.min(this.positions.near, this.positions.far) * width;
    const high = Math.max(this.positions.near, this.positions.far) * width;
    context.fillStyle = "rgba(0,0,0,0.6)"; // what the clip flattens
    context.fillRect(0, 0, low, height);
    context.fillRect(high, 0, width - high, height);
    for (const name of ["far", "near"]) {
      const x = this.positions[name] * width;
      context.strokeStyle = HANDLE_COLORS[name];
      context.fillStyle = HANDLE_COLORS[name];
      context.lineWidth = 2 * ratio;
      context.beginPath();
      context.moveTo(x, 0);
      context.lineTo(x, height);
      context.stroke();
      context.beginPath();
      context.moveTo(x - 6 * ratio, 0);
      context.lineTo(x + 6 * ratio, 0);
      context.lineTo(x, 9 * ratio);
      context.fill();
      context.font = `${10 * ratio}px sans-serif`;
      context.textAlign = x > width / 2 ? "right" : "left";
      context.fillText(name, x + (x > width / 2 ? -8 : 8) * ratio, 11 * ratio);
    }
  }

  positionAt(event) {
    const box = this.histogramCanvas.getBoundingClientRect();
    return Math.min(1, Math.max(0, (event.clientX - box.left) / Math.max(1, box.width)));
  }

  /** Near stays above far (the node rejects near <= far), by at least one gray level. */
  constrained(handle, position) {
    const gap = 1 / 255;
    if (handle === "near") return Math.max(position, Math.min(1, this.positions.far + gap));
    return Math.min(position, Math.max(0, this.positions.near - gap));
  }

  startDrag(event) {
    if (!this.counts) return;
    event.preventDefault();
    event.stopPropagation();
    const at = this.positionAt(event);
    const { near, far } = this.positions;
    this.dragging = Math.abs(at - near) <= Math.abs(at - far) ? "near" : "far";
    this.histogramCanvas.setPointerCapture?.(event.pointerId);
    this.drag(event);
  }

  drag(event) {
    if (!this.dragging) return;
    event.preventDefault();
    event.stopPropagation();
    this.positions[this.dragging] = this.constrained(this.dragging, this.positionAt(event));
    if (!this.frameRequested) {
      // Pointer events can outpace the screen: one redraw per frame is enough
      this.frameRequested = true;
      requestAnimationFrame(() => {
        this.frameRequested = false;
        this.redraw();
        this.commit();
      });
    }
  }

  endDrag(event) {
    if (!this.dragging) return;
    this.positions[this.dragging] = this.constrained(this.dragging, this.positionAt(event));
    this.histogramCanvas.releasePointerCapture?.(event.pointerId);
    this.dragging = null;
    this.redraw();
    this.commit();
  }

  commit() {
    for (const name of ["near", "far"]) {
      this.writeWidget(name, positionToValue(this.positions[name], this.mode, this.cdf, this.widgetRange(name)));
    }
  }

  dispose() {
    this.dragging = null;
  }
}
