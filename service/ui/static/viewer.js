// One image viewport: zoom, pan, window/level by drag, invert, presets, full resolution on demand.
//
// The server renders the image once over its full range (window `default`: value v in 0..1 -> v*255);
// windows are applied here with the server's own formula, clip((v - (center - width/2)) / width, 0, 1),
// so a preset shown here equals GET /v1/studies/{id}/images/{n}.png?window=<preset>.

import { api } from "./api.js";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

export class Viewport {
  constructor({ studyId, image, label, presets, onShown }) {
    this.studyId = studyId;
    this.image = image;
    this.presets = presets;
    this.onShown = onShown || (() => {});
    this.center = 0.5;
    this.width = 1.0;
    this.invert = false;
    this.zoom = 1;
    this.panX = 0;
    this.panY = 0;
    this.full = false;
    this.values = null; // Uint8 gray values of the source image
    this.sourceWidth = 0;
    this.sourceHeight = 0;
    this.pending = false;

    const id = `view-${image.index}`;
    this.canvas = el("canvas", {
      class: "image-canvas", tabindex: "0", role: "img",
      "aria-label": `${label} image. Drag to change window and level, Shift+drag to pan, wheel to zoom.`,
      "data-view": label.toLowerCase(),
    });
    this.readout = el("output", { class: "readout", "aria-live": "off", id: `${id}-readout` });
    this.presetSelect = el("select", { "aria-label": `${label} window preset` },
      el("option", { value: "" }, "Custom"),
      ...presets.map((p) => el("option", { value: p.name }, p.name.replace("_", " "))));
    this.presetSelect.addEventListener("change", () => this.applyPreset(this.presetSelect.value));
    this.invertButton = el("button", { type: "button", "aria-pressed": "false", title: "Invert (I)", onclick: () => this.toggleInvert() }, "Invert");
    this.fullButton = el("button", { type: "button", title: "Load the original resolution", onclick: () => this.loadFull() }, "Full resolution");
    const zoomIn = el("button", { type: "button", "aria-label": `Zoom in ${label}`, onclick: () => this.zoomBy(1.25) }, "+");
    const zoomOut = el("button", { type: "button", "aria-label": `Zoom out ${label}`, onclick: () => this.zoomBy(0.8) }, "−");
    const reset = el("button", { type: "button", title: "Reset view (0)", onclick: () => this.reset() }, "Reset");
    this.sizeLabel = el("span", { class: "size" });
    this.root = el("figure", { class: "viewport", "aria-labelledby": `${id}-caption` },
      el("figcaption", { id: `${id}-caption` }, el("strong", {}, label), " ", this.sizeLabel),
      el("div", { class: "viewport-tools", role: "toolbar", "aria-label": `${label} image tools` },
        this.presetSelect, this.invertButton, zoomOut, zoomIn, reset, this.fullButton),
      el("div", { class: "canvas-wrap" }, this.canvas),
      this.readout);
    this.processed = document.createElement("canvas");
    this.root.viewport = this; // for checks from the browser console and the end-to-end tests
    this.bindPointer();
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  async load() {
    const bitmap = await api.imageBitmap(`/v1/studies/${encodeURIComponent(this.studyId)}/images/${this.image.index}.png`);
    this.setSource(bitmap);
    this.onShown();
  }

  async loadFull() {
    if (this.full) return;
    this.fullButton.disabled = true;
    this.fullButton.textContent = "Loading…";
    try {
      const bitmap = await api.imageBitmap(`/v1/ui/studies/${encodeURIComponent(this.studyId)}/images/${this.image.index}/full.png`);
      this.full = true;
      this.setSource(bitmap);
      this.fullButton.textContent = "Full resolution ✓";
    } catch (error) {
      this.fullButton.disabled = false;
      this.fullButton.textContent = "Full resolution";
      throw error;
    }
  }

  setSource(bitmap) {
    const scratch = document.createElement("canvas");
    scratch.width = bitmap.width;
    scratch.height = bitmap.height;
    const context = scratch.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
    this.values = new Uint8Array(bitmap.width * bitmap.height);
    for (let i = 0; i < this.values.length; i++) this.values[i] = rgba[i * 4];
    this.sourceWidth = bitmap.width;
    this.sourceHeight = bitmap.height;
    this.processed.width = bitmap.width;
    this.processed.height = bitmap.height;
    const original = this.image.rows && this.image.columns ? `${this.image.columns}×${this.image.rows}` : "";
    this.sizeLabel.textContent = `${bitmap.width}×${bitmap.height} ${this.full ? "(full resolution)" : `(preview${original ? ` of ${original}` : ""})`}`;
    this.canvas.dataset.sourceWidth = String(bitmap.width);
    this.canvas.dataset.resolution = this.full ? "full" : "preview";
    if (this.image.columns && bitmap.width >= this.image.columns) {
      this.full = true;
      this.fullButton.disabled = true;
      this.fullButton.textContent = "Full resolution ✓";
    }
    this.applyWindow();
  }

  applyWindow() {
    if (!this.values) return;
    const lut = new Uint8ClampedArray(256);
    const low = this.center - this.width / 2;
    for (let v = 0; v < 256; v++) {
      let shown = Math.min(1, Math.max(0, (v / 255 - low) / this.width));
      if (this.invert) shown = 1 - shown;
      lut[v] = Math.floor(shown * 255 + 0.5);
    }
    const out = new ImageData(this.sourceWidth, this.sourceHeight);
    const data = out.data;
    const values = this.values;
    for (let i = 0, j = 0; i < values.length; i++, j += 4) {
      const g = lut[values[i]];
      data[j] = g; data[j + 1] = g; data[j + 2] = g; data[j + 3] = 255;
    }
    this.processed.getContext("2d").putImageData(out, 0, 0);
    this.readout.textContent = `W ${this.width.toFixed(2)} · L ${this.center.toFixed(2)}${this.invert ? " · inverted" : ""} · ${Math.round(this.zoom * 100)}%`;
    this.canvas.dataset.window = `${this.center.toFixed(3)},${this.width.toFixed(3)}`;
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const box = canvas.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(box.width * ratio));
    const h = Math.max(1, Math.round(box.height * ratio));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const context = canvas.getContext("2d");
    context.fillStyle = "#000";
    context.fillRect(0, 0, w, h);
    if (!this.values) return;
    const fit = Math.min(w / this.sourceWidth, h / this.sourceHeight);
    const scale = fit * this.zoom;
    const dw = this.sourceWidth * scale;
    const dh = this.sourceHeight * scale;
    context.imageSmoothingEnabled = scale < 4;
    context.drawImage(this.processed, (w - dw) / 2 + this.panX * ratio, (h - dh) / 2 + this.panY * ratio, dw, dh);
  }

  setWindow(center, width, presetName = "") {
    this.center = Math.min(1.5, Math.max(-0.5, center));
    this.width = Math.min(2, Math.max(0.01, width));
    this.presetSelect.value = presetName;
    this.applyWindow();
  }

  applyPreset(name) {
    const preset = this.presets.find((p) => p.name === name);
    if (preset) this.setWindow(preset.center, preset.width, preset.name);
  }

  toggleInvert() {
    this.invert = !this.invert;
    this.invertButton.setAttribute("aria-pressed", String(this.invert));
    this.applyWindow();
  }

  zoomBy(factor) {
    this.zoom = Math.min(20, Math.max(0.25, this.zoom * factor));
    const fitScale = this.canvas.getBoundingClientRect().width / (this.image.columns || this.sourceWidth || 1);
    if (!this.full && this.zoom * fitScale > (this.sourceWidth / (this.image.columns || this.sourceWidth)) * 1.5) {
      this.loadFull().catch(() => {});
    }
    this.applyWindow();
  }

  reset() {
    this.zoom = 1; this.panX = 0; this.panY = 0; this.invert = false;
    this.invertButton.setAttribute("aria-pressed", "false");
    this.setWindow(0.5, 1.0, "default");
  }

  bindPointer() {
    const canvas = this.canvas;
    let drag = null;
    canvas.addEventListener("contextmenu", (event) => event.preventDefault());
    canvas.addEventListener("pointerdown", (event) => {
      canvas.setPointerCapture(event.pointerId);
      canvas.focus();
      drag = { x: event.clientX, y: event.clientY, pan: event.shiftKey || event.button !== 0,
               center: this.center, width: this.width, panX: this.panX, panY: this.panY };
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!drag) return;
      const dx = event.clientX - drag.x;
      const dy = event.clientY - drag.y;
      if (drag.pan) {
        this.panX = drag.panX + dx;
        this.panY = drag.panY + dy;
        this.draw();
      } else if (!this.pending) {
        // right = wider window, down = higher level (brighter structures need a higher level)
        const box = canvas.getBoundingClientRect();
        const width = drag.width * Math.exp((dx / box.width) * 2);
        const center = drag.center + (dy / box.height) * 0.8;
        this.pending = true;
        requestAnimationFrame(() => { this.pending = false; this.setWindow(center, width); });
      }
    });
    const end = () => { drag = null; };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      this.zoomBy(event.deltaY < 0 ? 1.15 : 1 / 1.15);
    }, { passive: false });
    canvas.addEventListener("dblclick", () => this.reset());
    canvas.addEventListener("keydown", (event) => {
      const step = 20;
      const keys = {
        ArrowLeft: () => { this.panX -= step; this.draw(); },
        ArrowRight: () => { this.panX += step; this.draw(); },
        ArrowUp: () => { this.panY -= step; this.draw(); },
        ArrowDown: () => { this.panY += step; this.draw(); },
        "+": () => this.zoomBy(1.25), "=": () => this.zoomBy(1.25), "-": () => this.zoomBy(0.8),
        i: () => this.toggleInvert(), 0: () => this.reset(), f: () => this.loadFull().catch(() => {}),
      };
      const index = Number.parseInt(event.key, 10);
      if (index >= 1 && index <= this.presets.length && !event.altKey && !event.ctrlKey) {
        this.applyPreset(this.presets[index - 1].name);
        event.preventDefault();
      } else if (keys[event.key] && !event.altKey && !event.ctrlKey && !event.metaKey) {
        keys[event.key]();
        event.preventDefault();
      }
    });
  }
}
