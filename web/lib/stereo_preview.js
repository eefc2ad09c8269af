// The last stereo pair as wiggle stereo (the two eyes alternating, which shows depth without glasses) or as a
// red/cyan anaglyph composited in the browser.
import { addStyle, loadImage, makeElement, pixelsOf } from "./view.js";

const WIGGLE_PERIOD_MS = 140;

/** Color anaglyph: red from the left eye, green and blue from the right. */
export function anaglyph(left, right) {
  const out = new ImageData(left.width, left.height);
  const a = left.data;
  const b = right.data;
  const o = out.data;
  for (let i = 0; i < o.length; i += 4) {
    o[i] = a[i];
    o[i + 1] = b[i + 1];
    o[i + 2] = b[i + 2];
    o[i + 3] = 255;
  }
  return out;
}

export class StereoPreview {
  constructor({ onResize }) {
    addStyle();
    this.onResize = onResize;
    this.mode = "wiggle";
    this.timer = null;
    this.eye = "left";

    this.element = makeElement("div", "depthtoolkit-preview depthtoolkit-stereo");
    this.empty = makeElement("div", "depthtoolkit-empty", this.element);
    this.empty.textContent = "Run the workflow to preview the stereo pair (wiggle or anaglyph).";
    this.buttons = makeElement("div", "depthtoolkit-buttons", this.element);
    this.wiggleButton = makeElement("button", "depthtoolkit-wiggle", this.buttons);
    this.wiggleButton.textContent = "Wiggle";
    this.wiggleButton.title = "Alternate the left and right views: depth shows as motion parallax, no glasses needed";
    this.anaglyphButton = makeElement("button", "depthtoolkit-anaglyph", this.buttons);
    this.anaglyphButton.textContent = "Anaglyph";
    this.anaglyphButton.title = "Red/cyan anaglyph of the pair, for red (left) / cyan (right) glasses";
    this.canvas = makeElement("canvas", "depthtoolkit-stereo-image", this.element);
    this.buttons.style.display = "none";
    this.canvas.style.display = "none";
    for (const [button, mode] of [[this.wiggleButton, "wiggle"], [this.anaglyphButton, "anaglyph"]]) {
      button.addEventListener("pointerdown", (event) => event.stopPropagation());
      button.addEventListener("click", (event) => {
        event.stopPropagation();
        this.setMode(mode);
      });
    }
    this.element.dataset.mode = this.mode;
  }

  minHeight() {
    if (!this.left) return 40;
    const width = this.element.clientWidth || 300;
    return Math.ceil((width * this.left.height) / this.left.width + 34);
  }

  async show(pair) {
    try {
      const [left, right] = await Promise.all([loadImage(pair.left), loadImage(pair.right)]);
      this.left = pixelsOf(left);
      this.right = pixelsOf(right);
    } catch (error) {
      console.warn("Depth Toolkit: could not load the stereo pair", error);
      return;
    }
    this.composite = null;
    this.canvas.width = this.left.width;
    this.canvas.height = this.left.height;
    this.empty.style.display = "none";
    this.buttons.style.display = "flex";
    this.canvas.style.display = "block";
    this.setMode(this.mode);
    this.onResize?.();
  }

  setMode(mode) {
    this.mode = mode;
    this.element.dataset.mode = mode;
    this.wiggleButton.classList.toggle("depthtoolkit-active", mode === "wiggle");
    this.anaglyphButton.classList.toggle("depthtoolkit-active", mode === "anaglyph");
    clearInterval(this.timer);
    this.timer = null;
    if (!this.left) return;
    if (mode === "wiggle") {
      this.drawEye("left");
      this.timer = setInterval(() => {
        if (!this.element.isConnected) return;
        this.drawEye(this.eye === "left" ? "right" : "left");
      }, WIGGLE_PERIOD_MS);
    } else {
      this.composite ??= anaglyph(this.left, this.right);
      this.canvas.getContext("2d").putImageData(this.composite, 0, 0);
      this.eye = "both";
      this.element.dataset.eye = "both";
    }
  }

  drawEye(eye) {
    this.eye = eye;
    this.element.dataset.eye = eye;
    this.canvas.getContext("2d").putImageData(eye === "left" ? this.left : this.right, 0, 0);
  }

  dispose() {
    clearInterval(this.timer);
    this.timer = null;
  }
}
