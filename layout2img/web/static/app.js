// layout2img scene-graph editor: builds a graph, asks /api/generate, shows layout and image
// (edit.js adds text-guided region editing and Undo, styles.js the restyle control, appearance.js
// appearance from a picture).
"use strict";

const $ = (id) => document.getElementById(id);

// The same colours as layout2img.visualize.label_color (crc32 of the name into this palette).
const PALETTE = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
  [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180],
  [0, 0, 128], [128, 128, 128],
];
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(text) {
  let c = 0xffffffff;
  for (const b of new TextEncoder().encode(text)) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function labelColor(name) {
  const [r, g, b] = PALETTE[crc32(name) % PALETTE.length];
  return { css: `rgb(${r}, ${g}, ${b})`, dark: 0.299 * r + 0.587 * g + 0.114 * b > 140 };
}

const CANVAS_SIDE = 384;
const MIN_SIDE = 0.03; // smallest box side while dragging (fraction of the image)
const HANDLE = 10; // px: the resize corner

const state = {
  info: null,
  objects: [], // {id, name, description, box: pinned [x0,y0,x1,y1] | null, shown: last predicted/used box,
  //             style: a seed for its style code, code: an explicit style code (an edit's) | null}
  relations: [], // {subject: id, predicate, object: id}
  layoutSeed: 0, // a layout sampler draws the free boxes from it ("New layout" picks another)
  nextId: 1,
  selected: null, // object id
  result: null, // the last /api/generate answer
  seq: 0, // requests sent
  timer: null,
  masks: null, // Image of the layout's masks
  drag: null,
  invalid: new Set(), // ids of objects the last answer complained about
  version: 0, // bumped by every change of the scene: an edit started before a change is not applied
};

const randomSeed = () => Math.floor(Math.random() * 2147483647);

// -- the graph ---------------------------------------------------------------------------------
function objectIndex() {
  return new Map(state.objects.map((o, i) => [o.id, i]));
}

function buildGraph({ forExport = false } = {}) {
  const index = objectIndex();
  const graph = {
    objects: state.objects.map((o) => o.name),
    relationships: state.relations.map((r) => [index.get(r.subject), r.predicate, index.get(r.object)]),
  };
  const texts = state.objects.map((o) => (o.description && o.description.trim() ? o.description.trim() : null));
  if (texts.some((t) => t !== null)) graph.descriptions = texts;
  if (state.objects.some((o) => o.box)) {
    if (forExport) {
      // a file holds a box for every object or for none: fixed ones, else where the model put them
      const boxes = state.objects.map((o) => o.box || o.shown || null);
      if (boxes.every((b) => b)) graph.boxes = boxes.map((b) => b.map((v) => +v.toFixed(4)));
    } else {
      graph.boxes = state.objects.map((o) => (o.box ? o.box.map((v) => +v.toFixed(4)) : null));
    }
  }
  const caption = $("caption").value.trim();
  if (caption) graph.caption = caption;
  return graph;
}

function addObject(name, extra = {}) {
  const o = { id: state.nextId++, name, description: "", box: null, shown: null, style: randomSeed(), code: null, ...extra };
  state.objects.push(o);
  return o;
}

function removeObject(id) {
  state.objects = state.objects.filter((o) => o.id !== id);
  state.relations = state.relations.filter((r) => r.subject !== id && r.object !== id);
  if (state.selected === id) state.selected = null;
  changed();
}

function changed({ now = false } = {}) {
  state.version++;
  render();
  if (!$("auto-update").checked && !now) return;
  clearTimeout(state.timer);
  state.timer = setTimeout(generate, now ? 0 : 300);
}

// The scene as the server reads it (/api/generate, /api/edit): graph, seeds, and the codes edits found.
function sceneRequest() {
  const body = { graph: buildGraph(), seed: 0, layout_seed: state.layoutSeed, style_seeds: state.objects.map((o) => o.style) };
  if (state.objects.some((o) => o.code)) body.style_codes = state.objects.map((o) => o.code || null);
  return body;
}

// -- talking to the server -------------------------------------------------------------------
async function fetchJSON(url, options) {
  const res = await fetch(url, options);
  let data;
  try {
    data = await res.json();
  } catch (e) {
    data = { error: `the server answered ${res.status} without JSON` };
  }
  return { ok: res.ok, status: res.status, data };
}

async function generate() {
  clearTimeout(state.timer);
  if (!state.info) return;
  if (!state.objects.length) {
    state.result = null;
    $("result-image").hidden = true;
    $("placeholder").hidden = false;
    setStatus("Add an object to draw an image.");
    render();
    return;
  }
  const seq = ++state.seq;
  const ids = state.objects.map((o) => o.id);
  const body = sceneRequest();
  setBusy(true);
  let answer;
  try {
    answer = await fetchJSON("/api/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (e) {
    answer = { ok: false, status: 0, data: { error: "cannot reach the server (is `layout2img serve` still running?)" } };
  }
  if (seq !== state.seq) return; // a newer request is on its way
  setBusy(false);
  if (!answer.ok) {
    const lines = answer.data.errors || [];
    // "object 2: ..." in the validator's lines: mark those rows
    state.invalid = new Set(lines.map((l) => /: object (\d+):/.exec(l)).filter(Boolean).map((m) => ids[Number(m[1])]));
    $("result-image").classList.add("stale");
    render();
    setError(answer.data.error || `request failed (${answer.status})`, lines);
    return;
  }
  const data = answer.data;
  state.result = data;
  state.invalid = new Set();
  $("result-image").classList.remove("stale");
  const byId = new Map(state.objects.map((o) => [o.id, o]));
  ids.forEach((id, i) => {
    const o = byId.get(id);
    if (o) o.shown = data.boxes[i];
  });
  const img = $("result-image");
  img.src = data.image;
  img.hidden = false;
  $("placeholder").hidden = true;
  const masks = new Image();
  masks.onload = () => {
    if (state.result === data) {
      state.masks = masks;
      drawLayout();
    }
  };
  masks.src = data.masks_image;
  const warn = data.warnings && data.warnings.length ? ` · ${data.warnings.length} warning(s): ${data.warnings[0]}` : "";
  setStatus(`${state.objects.length} object(s), ${state.relations.length} relation(s) · ${data.ms} ms${warn}`);
  render();
}

function setBusy(busy) {
  $("spinner").hidden = !busy;
  $("result-image").classList.toggle("busy", busy);
}

function setStatus(text) {
  const el = $("status");
  el.className = "";
  el.textContent = text;
}

function setError(message, lines) {
  const el = $("status");
  el.className = "error";
  el.textContent = message;
  const more = (lines || []).filter((l) => l !== message);
  if (more.length) {
    const ul = document.createElement("ul");
    for (const line of more.slice(0, 8)) {
      const li = document.createElement("li");
      li.textContent = line;
      ul.appendChild(li);
    }
    el.appendChild(ul);
  }
}

// -- the panels --------------------------------------------------------------------------------
function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function render() {
  renderObjects();
  renderRelations();
  $("generate").disabled = !state.info || !state.objects.length;
  $("download-png").disabled = !state.result;
  $("download-json").disabled = !state.objects.length;
  $("free-all").disabled = !state.objects.some((o) => o.box);
  $("new-layout").disabled = !state.objects.length || !(state.info && state.info.layout_sampler)
    || state.objects.every((o) => o.box);
  $("new-styles").disabled = !state.objects.length || !(state.info && state.info.style);
  drawLayout();
  renderEdit();
  renderAppearance(); // appearance.js
}

function renderObjects() {
  const list = $("object-list");
  list.replaceChildren();
  const text = state.info && state.info.text;
  state.objects.forEach((o, i) => {
    const swatch = el("span", { className: "swatch" });
    swatch.style.background = labelColor(o.name).css;
    const description = el("input", {
      type: "text", className: "description", value: o.description, disabled: !text,
      placeholder: text ? "describe it (optional)" : "description needs a text model",
      title: text ? "Free text for this object" : state.info.text_reason,
    });
    description.addEventListener("change", () => { o.description = description.value; changed(); });
    const restyle = restyleControl(o); // styles.js
    const remove = el("button", { type: "button", className: "remove", textContent: "\u00d7",
      title: "Remove this object and its relations", "aria-label": `remove ${o.name}` });
    remove.addEventListener("click", () => removeObject(o.id));
    const row = [el("span", { className: "index", textContent: `${i}` }), swatch,
      el("span", { className: "name", textContent: o.name }),
      el("span", { className: "grow" }, [description])];
    if (o.box) {
      const pin = el("button", { type: "button", className: "badge", textContent: "fixed",
        title: "The box is fixed: click to let the model place it" });
      pin.addEventListener("click", () => { o.box = null; changed(); });
      row.push(pin);
    }
    row.push(restyle.button, remove);
    if (restyle.swatches) row.push(restyle.swatches);
    const classes = [o.id === state.selected ? "selected" : "", state.invalid.has(o.id) ? "invalid" : ""];
    const li = el("li", { dataset: { id: o.id }, className: classes.join(" ").trim() }, row);
    if (state.invalid.has(o.id)) li.title = "The server refused this object: see the message under the image";
    li.addEventListener("mouseenter", () => { state.selected = o.id; drawLayout(); renderAppearance(); });
    list.appendChild(li);
  });
  $("objects-empty").hidden = state.objects.length > 0;
  // the relation pickers follow the objects
  for (const [id, fallback] of [["rel-subject", 0], ["rel-object", 1]]) {
    const select = $(id);
    const before = select.value;
    select.replaceChildren(...state.objects.map((o, i) => el("option", { value: String(o.id), textContent: `${i}: ${o.name}` })));
    if (state.objects.some((o) => String(o.id) === before)) select.value = before;
    else if (state.objects.length > fallback) select.value = String(state.objects[fallback].id);
  }
  const enough = state.objects.length >= 2;
  for (const id of ["rel-subject", "rel-predicate", "rel-object", "add-relation"]) $(id).disabled = !enough;
}

function renderRelations() {
  const list = $("relation-list");
  list.replaceChildren();
  const index = objectIndex();
  const byId = new Map(state.objects.map((o) => [o.id, o]));
  state.relations.forEach((r, j) => {
    const s = byId.get(r.subject), o = byId.get(r.object);
    const remove = el("button", { type: "button", className: "remove", textContent: "\u00d7", title: "Remove this relation" });
    remove.addEventListener("click", () => { state.relations.splice(j, 1); changed(); });
    list.appendChild(el("li", {}, [
      el("span", { className: "relation" }, [
        el("span", { className: "name", textContent: `${s.name}` }), ` (${index.get(r.subject)}) `,
        el("span", { className: "predicate", textContent: r.predicate }), " ",
        el("span", { className: "name", textContent: `${o.name}` }), ` (${index.get(r.object)})`,
      ]),
      remove,
    ]));
  });
  $("relations-empty").hidden = state.relations.length > 0 || state.objects.length >= 2;
}

// -- the layout canvas -------------------------------------------------------------------------
const canvas = () => $("layout-canvas");

function setupCanvas() {
  const c = canvas();
  const dpr = window.devicePixelRatio || 1;
  c.width = Math.round(CANVAS_SIDE * dpr);
  c.height = Math.round(CANVAS_SIDE * dpr);
  c.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
}

function boxOf(o) {
  if (state.drag && state.drag.id === o.id && state.drag.box) return state.drag.box;
  return o.box || o.shown;
}

function drawLayout() {
  const c = canvas();
  const ctx = c.getContext("2d");
  const S = CANVAS_SIDE;
  ctx.clearRect(0, 0, S, S);
  ctx.fillStyle = "#f2f2f2";
  ctx.fillRect(0, 0, S, S);
  const dragging = state.drag && state.drag.box;
  if (state.masks && $("show-masks").checked && !dragging) ctx.drawImage(state.masks, 0, 0, S, S);
  ctx.strokeStyle = "rgba(0,0,0,0.06)";
  ctx.lineWidth = 1;
  for (let k = 1; k < 8; k++) {
    ctx.beginPath(); ctx.moveTo((k * S) / 8, 0); ctx.lineTo((k * S) / 8, S); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, (k * S) / 8); ctx.lineTo(S, (k * S) / 8); ctx.stroke();
  }
  // large boxes first, so small ones stay visible (and clickable) on top
  const order = drawOrder();
  ctx.font = "12px 'DejaVu Sans', sans-serif";
  const tags = []; // label rectangles already drawn: a new label moves down until it is free
  for (const o of order) {
    const b = boxOf(o);
    if (!b) continue;
    const [x0, y0, x1, y1] = [b[0] * S, b[1] * S, b[2] * S, b[3] * S];
    const color = labelColor(o.name);
    const fixed = !!o.box || (state.drag && state.drag.id === o.id && state.drag.box);
    const selected = o.id === state.selected;
    ctx.save();
    ctx.strokeStyle = color.css;
    ctx.lineWidth = selected ? 3.5 : 2.5;
    ctx.setLineDash(fixed ? [] : [7, 4]);
    ctx.strokeRect(x0 + 1, y0 + 1, Math.max(1, x1 - x0 - 2), Math.max(1, y1 - y0 - 2));
    ctx.setLineDash([]);
    const label = `${state.objects.indexOf(o)}: ${o.name}${fixed ? " (fixed)" : ""}`;
    const w = ctx.measureText(label).width + 8;
    const tx = Math.min(Math.max(x0, 0), S - w);
    let ty = y0 >= 17 ? y0 - 17 : y0;
    const overlaps = (t) => tx < t[0] + t[2] && t[0] < tx + w && ty < t[1] + 17 && t[1] < ty + 17;
    while (tags.some(overlaps) && ty + 34 <= S) ty += 17;
    tags.push([tx, ty, w]);
    ctx.fillStyle = color.css;
    ctx.fillRect(tx, ty, w, 17);
    ctx.fillStyle = color.dark ? "#000" : "#fff";
    ctx.fillText(label, tx + 4, ty + 13);
    if (selected || fixed) {
      ctx.fillStyle = color.css;
      ctx.fillRect(x1 - HANDLE, y1 - HANDLE, HANDLE, HANDLE);
    }
    ctx.restore();
  }
  if (!state.objects.length) {
    ctx.fillStyle = "#8a9099";
    ctx.font = "14px 'DejaVu Sans', sans-serif";
    ctx.textAlign = "center";
    ctx.fillText("The layout appears here.", S / 2, S / 2);
    ctx.textAlign = "start";
  }
}

function drawOrder() {
  const area = (o) => { const b = boxOf(o); return b ? (b[2] - b[0]) * (b[3] - b[1]) : 0; };
  return [...state.objects].sort((a, b) => area(b) - area(a));
}

function pointerPos(event) {
  const r = canvas().getBoundingClientRect();
  return [(event.clientX - r.left) / r.width, (event.clientY - r.top) / r.height];
}

function hit([x, y]) {
  // the topmost box under the pointer: smallest first, as drawn last
  const order = drawOrder().reverse();
  const handle = HANDLE / CANVAS_SIDE;
  for (const o of order) {
    const b = boxOf(o);
    if (!b) continue;
    const nearCorner = Math.abs(x - b[2]) <= handle * 1.2 && Math.abs(y - b[3]) <= handle * 1.2;
    if (nearCorner) return { o, mode: "resize" };
  }
  for (const o of order) {
    const b = boxOf(o);
    if (b && x >= b[0] && x <= b[2] && y >= b[1] && y <= b[3]) return { o, mode: "move" };
  }
  return null;
}

const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);

function setupCanvasEvents() {
  const c = canvas();
  c.addEventListener("pointerdown", (event) => {
    const p = pointerPos(event);
    const h = hit(p);
    if (!h) return;
    event.preventDefault();
    c.setPointerCapture(event.pointerId);
    state.selected = h.o.id;
    pickEditTarget(h.o.id);
    state.drag = { id: h.o.id, mode: h.mode, start: p, from: boxOf(h.o).slice(), box: null };
    render();
  });
  c.addEventListener("pointermove", (event) => {
    const p = pointerPos(event);
    const d = state.drag;
    if (!d) {
      const h = hit(p);
      c.style.cursor = h ? (h.mode === "resize" ? "nwse-resize" : "move") : "default";
      return;
    }
    const [dx, dy] = [p[0] - d.start[0], p[1] - d.start[1]];
    if (!d.box && Math.hypot(dx, dy) * CANVAS_SIDE < 3) return; // a click, not a drag yet
    const [x0, y0, x1, y1] = d.from;
    if (d.mode === "move") {
      const mx = clamp(dx, -x0, 1 - x1), my = clamp(dy, -y0, 1 - y1);
      d.box = [x0 + mx, y0 + my, x1 + mx, y1 + my];
    } else {
      d.box = [x0, y0, clamp(x1 + dx, x0 + MIN_SIDE, 1), clamp(y1 + dy, y0 + MIN_SIDE, 1)];
    }
    drawLayout();
  });
  const finish = () => {
    const d = state.drag;
    state.drag = null;
    if (!d) return;
    const o = state.objects.find((q) => q.id === d.id);
    if (o && d.box) {
      o.box = d.box;
      o.shown = d.box;
      changed({ now: true });
    } else {
      render();
    }
  };
  c.addEventListener("pointerup", finish);
  c.addEventListener("pointercancel", finish);
  c.addEventListener("dblclick", (event) => {
    const h = hit(pointerPos(event));
    if (h && h.o.box) {
      h.o.box = null;
      changed({ now: true });
    }
  });
  c.addEventListener("pointerleave", () => { if (!state.drag) c.style.cursor = "default"; });
}

// -- files -------------------------------------------------------------------------------------
function download(name, href) {
  const a = el("a", { href, download: name });
  document.body.appendChild(a);
  a.click();
  a.remove();
}

function downloadJSON() {
  const blob = new Blob([JSON.stringify(buildGraph({ forExport: true }), null, 1) + "\n"], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  download("scene_graph.json", url);
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function loadGraph(data) {
  let graph = data;
  if (Array.isArray(graph)) {
    if (!graph.length) throw new Error("the file holds an empty list");
    graph = graph[0];
  }
  if (!graph || typeof graph !== "object" || !Array.isArray(graph.objects)) {
    throw new Error("expected a scene graph in sg2im form: {\"objects\": [...], \"relationships\": [...]}");
  }
  const n = graph.objects.length;
  const objects = graph.objects.map((name, i) => ({
    id: state.nextId + i, name: String(name), description: (graph.descriptions && graph.descriptions[i]) || "",
    box: graph.boxes && Array.isArray(graph.boxes[i]) ? graph.boxes[i].map(Number) : null, shown: null, style: randomSeed(),
    code: null,
  }));
  const relations = [];
  for (const [j, rel] of (graph.relationships || []).entries()) {
    if (!Array.isArray(rel) || rel.length !== 3 || !Number.isInteger(rel[0]) || !Number.isInteger(rel[2])
        || rel[0] < 0 || rel[0] >= n || rel[2] < 0 || rel[2] >= n) {
      throw new Error(`relation ${j}: expected [subject index, "predicate", object index]`);
    }
    relations.push({ subject: objects[rel[0]].id, predicate: String(rel[1]), object: objects[rel[2]].id });
  }
  state.nextId += n;
  state.objects = objects;
  state.relations = relations;
  state.selected = null;
  $("caption").value = typeof graph.caption === "string" ? graph.caption : "";
  return Array.isArray(data) && data.length > 1 ? `loaded graph 0 of ${data.length}` : "loaded";
}

// -- start -------------------------------------------------------------------------------------
function setupControls() {
  $("add-object-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("object-name").value;
    if (!name) return;
    if (state.objects.length >= state.info.max_objects) {
      setError(`at most ${state.info.max_objects} objects`);
      return;
    }
    state.selected = addObject(name).id;
    changed();
  });
  $("add-relation-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const subject = Number($("rel-subject").value), object = Number($("rel-object").value);
    if (subject === object) {
      setError("a relation needs two different objects");
      return;
    }
    state.relations.push({ subject, predicate: $("rel-predicate").value, object });
    changed();
  });
  $("generate").addEventListener("click", () => generate());
  $("auto-update").addEventListener("change", () => { if ($("auto-update").checked) changed(); });
  $("new-styles").addEventListener("click", () => {
    for (const o of state.objects) {
      o.style = randomSeed();
      o.code = null;
    }
    changed({ now: true });
  });
  $("new-layout").addEventListener("click", () => {
    state.layoutSeed = randomSeed(); // fixed (user-drawn) boxes stay; the others are drawn again
    changed({ now: true });
  });
  $("free-all").addEventListener("click", () => {
    for (const o of state.objects) o.box = null;
    changed({ now: true });
  });
  $("show-masks").addEventListener("change", drawLayout);
  $("caption").addEventListener("change", () => changed());
  $("download-png").addEventListener("click", () => state.result && download("layout2img.png", state.result.image));
  $("download-json").addEventListener("click", downloadJSON);
  $("open-json").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (!file) return;
    try {
      const note = loadGraph(JSON.parse(await file.text()));
      setStatus(`${file.name}: ${note}`);
      changed({ now: true });
    } catch (e) {
      setError(`${file.name}: ${e.message}`);
    }
  });
}

function applyInfo(info) {
  state.info = info;
  const step = info.training_step != null ? `, step ${info.training_step}` : "";
  $("model-info").textContent = `${info.vocab} vocabulary · ${info.image_size}\u00d7${info.image_size} px${step}`;
  $("object-name").replaceChildren(...info.objects.map((n) => el("option", { value: n, textContent: n })));
  $("rel-predicate").replaceChildren(...info.predicates.map((p) => el("option", { value: p, textContent: p })));
  const caption = $("caption");
  caption.disabled = !info.text;
  if (!info.text) {
    caption.placeholder = "captions need a model with a text encoder";
    $("caption-wrap").title = info.text_reason;
    caption.title = info.text_reason;
    $("text-note").textContent = "(not available: no text encoder)";
  }
  const edit = $("edit-region");
  edit.disabled = !info.region_edit;
  edit.title = info.region_edit_reason || "Change an object or a box of the image to match a text";
  $("edit-wrap").title = info.region_edit_reason || "";
  if (!info.layout_sampler) $("new-layout").title = "This model predicts one layout per graph (layout.predictor: regression)";
  if (!info.style) $("edit-modulation").checked = true; // without style codes only the colour can change
  $("edit-modulation").disabled = !info.style;
}

async function start() {
  setupCanvas();
  setupCanvasEvents();
  setupControls();
  setupEditing();
  setupAppearance();
  render();
  let answer;
  try {
    answer = await fetchJSON("/api/info");
  } catch (e) {
    answer = { ok: false, data: { error: "cannot reach the server" } };
  }
  if (!answer.ok) {
    setError(answer.data.error || "cannot read /api/info");
    return;
  }
  applyInfo(answer.data);
  setStatus("Add objects and relations; the image follows your edits.");
  render();
}

document.addEventListener("DOMContentLoaded", start);
