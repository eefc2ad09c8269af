// Loading the images a node reports in its ui output ({filename, subfolder, type}) through the server's /view.
import { api } from "../../../scripts/api.js";

export function viewUrl(ref) {
  const query = new URLSearchParams({
    filename: ref.filename,
    subfolder: ref.subfolder ?? "",
    type: ref.type ?? "output",
  });
  // A cache-busting term: a re-run may write a file of the same name
  return api.apiURL(`/view?${query.toString()}&t=${Date.now()}`);
}

export async function loadImage(ref) {
  const image = new Image();
  image.src = viewUrl(ref);
  await image.decode();
  return image;
}

export function pixelsOf(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(image, 0, 0);
  return context.getImageData(0, 0, canvas.width, canvas.height);
}

export function makeElement(tag, className, parent) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  parent?.appendChild(element);
  return element;
}

let styleAdded = false;

export function addStyle() {
  if (styleAdded) return;
  styleAdded = true;
  const style = document.createElement("style");
  style.textContent = `
    .depthtoolkit-preview { display: flex; flex-direction: column; gap: 4px; width: 100%; box-sizing: border-box;
      font: 11px sans-serif; color: var(--descrip-text, #aaa); }
    .depthtoolkit-preview canvas { width: 100%; display: block; image-rendering: auto; }
    .depthtoolkit-preview .depthtoolkit-histogram { height: 72px; cursor: ew-resize; touch-action: none;
      border-radius: 4px; }
    .depthtoolkit-preview .depthtoolkit-empty { padding: 6px 2px; }
    .depthtoolkit-preview .depthtoolkit-buttons { display: flex; gap: 4px; }
    .depthtoolkit-preview button { flex: 1; font: 11px sans-serif; padding: 3px 6px; border-radius: 4px;
      border: 1px solid var(--border-color, #555); background: var(--comfy-input-bg, #222);
      color: var(--input-text, #ddd); cursor: pointer; }
    .depthtoolkit-preview button.depthtoolkit-active { background: var(--p-primary-color, #3b82f6); color: #fff; }
  `;
  document.head.appendChild(style);
}
