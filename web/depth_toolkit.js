// Depth Toolkit previews in the ComfyUI editor.
//
// ClipRenormalize: a histogram of the last depth with draggable near/far handles; dragging re-draws the clipped depth
// in the browser at once (no re-run) and writes the handles back into the node's near/far widgets.
// StereoSBS / Anaglyph: the last stereo pair shown as wiggle stereo (eyes alternating on a timer) or as a red/cyan
// anaglyph, so the 3D strength can be judged on an ordinary screen.
//
// The nodes feed these previews through their ui output: "depthtoolkit_histogram" (+ "images", the unclipped
// depth) and "depthtoolkit_stereo" ({left, right} image references for /view).
import { app } from "../../scripts/app.js";
import { ClipPreview } from "./lib/clip_preview.js";
import { StereoPreview } from "./lib/stereo_preview.js";

const CLIP_NODE = "DepthToolkit.ClipRenormalize";
const STEREO_NODES = new Set(["DepthToolkit.StereoSBS", "DepthToolkit.Anaglyph"]);

function chainCallback(object, property, callback) {
  const original = object[property];
  object[property] = function (...args) {
    const result = original?.apply(this, args);
    callback.apply(this, args);
    return result;
  };
}

function addPreviewWidget(node, name, preview) {
  const widget = node.addDOMWidget(name, "depthtoolkit_preview", preview.element, {
    serialize: false, // a preview is not a parameter: it must not add a value to the saved widgets_values
    hideOnZoom: false,
    getMinHeight: () => preview.minHeight(),
  });
  widget.serialize = false;
  chainCallback(widget, "onRemove", () => preview.dispose());
  return widget;
}

function findWidget(node, name) {
  return node.widgets?.find((widget) => widget.name === name);
}

function setWidgetValue(node, name, value) {
  const widget = findWidget(node, name);
  if (!widget) return;
  widget.value = value;
  widget.callback?.(value, app.canvas, node);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "DepthToolkit.Previews",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === CLIP_NODE) {
      chainCallback(nodeType.prototype, "onNodeCreated", function () {
        const node = this;
        const preview = new ClipPreview({
          readWidget: (name) => findWidget(node, name)?.value,
          widgetRange: (name) => findWidget(node, name)?.options ?? {},
          writeWidget: (name, value) => setWidgetValue(node, name, value),
          onResize: () => node.setDirtyCanvas?.(true, true),
        });
        node.depthtoolkitPreview = preview;
        addPreviewWidget(node, "depthtoolkit_clip_preview", preview);
      });
      chainCallback(nodeType.prototype, "onExecuted", function (output) {
        const histogram = output?.depthtoolkit_histogram?.[0];
        const image = output?.images?.[0];
        if (!histogram || !this.depthtoolkitPreview) return;
        this.depthtoolkitPreview.element.dataset.nodeId = String(this.id);
        this.depthtoolkitPreview.show(histogram, image);
      });
    }
    if (STEREO_NODES.has(nodeData.name)) {
      chainCallback(nodeType.prototype, "onNodeCreated", function () {
        const node = this;
        const preview = new StereoPreview({ onResize: () => node.setDirtyCanvas?.(true, true) });
        node.depthtoolkitPreview = preview;
        addPreviewWidget(node, "depthtoolkit_stereo_preview", preview);
      });
      chainCallback(nodeType.prototype, "onExecuted", function (output) {
        const pair = output?.depthtoolkit_stereo?.[0];
        if (!pair || !this.depthtoolkitPreview) return;
        this.depthtoolkitPreview.element.dataset.nodeId = String(this.id);
        this.depthtoolkitPreview.show(pair);
      });
    }
  },
});
