// layout2img editor: appearance from a picture (POST /api/appearance). A picture opened with the
// file picker or dropped on the panel is shown with reference boxes - at first the scene's objects
// at their current boxes - that say which object is where in it; the boxes can be moved, resized,
// drawn anew (with a class) and deleted. "Apply to scene" gives every scene object whose class the
// picture has that object's appearance (its style code), "Apply to selected object" the selected
// object the picked box's (else its class's); both set explicit codes, redraw, and push Undo.
// Uses app.js's state and helpers and edit.js's Undo; app.js calls renderAppearance().
"use strict";

const REF_SIDE = 320; // px: the longer side of the picture in the panel
const REF_HANDLE = 9; // px: a box's resize corner
const REF_MIN = 0.03; // smallest side of a reference box (fraction of the picture)

const appearance = {
  picture: null, // {name, image (the file as an Image), url (PNG data URL at the model's size), width, height}
  boxes: [], // reference boxes: {id, name, box: [x0, y0, x1, y1] in [0, 1] of the picture}
  picked: null, // id of the picked reference box
  drag: null, // {id, mode: "move" | "resize" | "draw", start, from, box}
  drawing: false, // "Draw a box" is on: the next drag draws one, even over other boxes
  nextId: 1,
  busy: false,
  note: "",
};

const refCanvas = () => $("ref-canvas");

function pickedBox() {
  return appearance.boxes.find((b) => b.id === appearance.picked) || null;
}

function selectedObject() {
  return state.objects.find((o) => o.id === state.selected) || null;
}

// -- opening a picture -------------------------------------------------------------------------
function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the browser cannot read this picture"));
    image.src = url;
  });
}

// The picture as the server reads it: a PNG at the model's size (stretched to a square, as the
// server would; boxes are fractions of the picture, so they follow), transparent parts on white.
function modelPicture(image) {
  const S = state.info.image_size;
  const c = document.createElement("canvas");
  c.width = S;
  c.height = S;
  const ctx = c.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, S, S);
  ctx.drawImage(image, 0, 0, S, S);
  return c.toDataURL("image/png");
}

// Reference boxes proposed from the scene: each object at the box it has now.
function sceneBoxes() {
  return state.objects.filter((o) => o.box || o.shown)
    .map((o) => ({ id: appearance.nextId++, name: o.name, box: (o.box || o.shown).slice() }));
}

async function openPicture(file) {
  if (!file || !state.info) return;
  if (!/^image\//.test(file.type)) {
    setError(`${file.name}: not a picture (${file.type || "unknown type"}); open a PNG, JPEG or WebP file`);
    return;
  }
  const src = URL.createObjectURL(file);
  let image;
  try {
    image = await loadImage(src);
  } catch (e) {
    URL.revokeObjectURL(src);
    setError(`${file.name}: ${e.message}`);
    return;
  }
  const url = modelPicture(image);
  if (url.length + 4096 > state.info.max_image_body) {
    URL.revokeObjectURL(src);
    setError(`${file.name}: too large to send even at ${state.info.image_size} px`);
    return;
  }
  if (appearance.picture) URL.revokeObjectURL(appearance.picture.image.src);
  appearance.picture = { name: file.name, image, url, width: image.naturalWidth, height: image.naturalHeight };
  appearance.boxes = sceneBoxes();
  appearance.picked = null;
  appearance.note = appearance.boxes.length
    ? `${appearance.boxes.length} box(es) proposed where the scene's objects are: move them onto the picture's things, or accept them.`
    : "Draw a box around each thing to take its appearance from, and pick its class.";
  setupRefCanvas();
  renderAppearance();
}

// -- the picture and its boxes -----------------------------------------------------------------
function setupRefCanvas() {
  const p = appearance.picture;
  const c = refCanvas();
  const scale = REF_SIDE / Math.max(p.width, p.height);
  const w = Math.max(40, Math.round(p.width * scale)), h = Math.max(40, Math.round(p.height * scale));
  const dpr = window.devicePixelRatio || 1;
  c.style.width = `${w}px`;
  c.style.height = `${h}px`;
  c.width = Math.round(w * dpr);
  c.height = Math.round(h * dpr);
  c.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
}

function refBoxOf(b) {
  const d = appearance.drag;
  return d && d.id === b.id && d.box ? d.box : b.box;
}

function drawReference() {
  const p = appearance.picture;
  const c = refCanvas();
  if (!p) return;
  const W = parseFloat(c.style.width), H = parseFloat(c.style.height);
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, W, H);
  ctx.drawImage(p.image, 0, 0, W, H);
  const boxes = [...appearance.boxes];
  const d = appearance.drag;
  if (d && d.mode === "draw" && d.box) boxes.push({ id: null, name: $("ref-class").value, box: d.box });
  boxes.sort((a, b) => area(refBoxOf(b)) - area(refBoxOf(a))); // small ones on top
  ctx.font = "11px 'DejaVu Sans', sans-serif";
  const tags = []; // label rectangles drawn: a new label moves down until it is free
  for (const b of boxes) {
    const [x0, y0, x1, y1] = refBoxOf(b);
    const [X0, Y0, X1, Y1] = [x0 * W, y0 * H, x1 * W, y1 * H];
    const color = labelColor(b.name);
    const picked = b.id === appearance.picked || b.id === null;
    const rect = [X0 + 1.5, Y0 + 1.5, Math.max(1, X1 - X0 - 3), Math.max(1, Y1 - Y0 - 3)];
    ctx.lineWidth = picked ? 4.5 : 3;
    ctx.strokeStyle = "rgba(0, 0, 0, 0.55)"; // a dark line under the colour: the box shows on any picture
    ctx.strokeRect(...rect);
    ctx.lineWidth = picked ? 2.5 : 1.5;
    ctx.strokeStyle = color.css;
    ctx.setLineDash(b.id === null ? [5, 3] : []);
    ctx.strokeRect(...rect);
    ctx.setLineDash([]);
    const index = appearance.boxes.indexOf(b);
    const label = index >= 0 ? `${index}: ${b.name}` : b.name;
    const w = ctx.measureText(label).width + 6;
    const tx = Math.min(Math.max(X0, 0), W - w);
    let ty = Y0 >= 15 ? Y0 - 15 : Y0;
    const overlaps = (t) => tx < t[0] + t[2] && t[0] < tx + w && ty < t[1] + 15 && t[1] < ty + 15;
    while (tags.some(overlaps) && ty + 30 <= H) ty += 15;
    tags.push([tx, ty, w]);
    ctx.fillStyle = color.css;
    ctx.fillRect(tx, ty, w, 15);
    ctx.fillStyle = color.dark ? "#000" : "#fff";
    ctx.fillText(label, tx + 3, ty + 11);
    if (picked) {
      ctx.fillStyle = color.css;
      ctx.fillRect(X1 - REF_HANDLE, Y1 - REF_HANDLE, REF_HANDLE, REF_HANDLE);
    }
  }
}

const area = (b) => (b[2] - b[0]) * (b[3] - b[1]);

function refPosition(event) {
  const r = refCanvas().getBoundingClientRect();
  return [clamp((event.clientX - r.left) / r.width, 0, 1), clamp((event.clientY - r.top) / r.height, 0, 1)];
}

function refHit([x, y]) {
  const r = refCanvas().getBoundingClientRect();
  const hx = (REF_HANDLE * 1.3) / r.width, hy = (REF_HANDLE * 1.3) / r.height;
  const order = [...appearance.boxes].sort((a, b) => area(a.box) - area(b.box)); // the one drawn on top first
  for (const b of order) {
    if (Math.abs(x - b.box[2]) <= hx && Math.abs(y - b.box[3]) <= hy) return { b, mode: "resize" };
  }
  for (const b of order) {
    if (x >= b.box[0] && x <= b.box[2] && y >= b.box[1] && y <= b.box[3]) return { b, mode: "move" };
  }
  return null;
}

function setupRefEvents() {
  const c = refCanvas();
  c.addEventListener("pointerdown", (event) => {
    if (!appearance.picture || appearance.busy) return;
    event.preventDefault();
    c.focus();
    c.setPointerCapture(event.pointerId);
    const p = refPosition(event);
    const h = appearance.drawing || event.shiftKey ? null : refHit(p);
    if (h) {
      appearance.picked = h.b.id;
      appearance.drag = { id: h.b.id, mode: h.mode, start: p, from: h.b.box.slice(), box: null };
    } else {
      appearance.drag = { id: null, mode: "draw", start: p, from: null, box: null };
    }
    renderAppearance();
  });
  c.addEventListener("pointermove", (event) => {
    const p = refPosition(event);
    const d = appearance.drag;
    if (!d) {
      const h = appearance.picture && refHit(p);
      const draw = appearance.drawing || event.shiftKey || !h;
      c.style.cursor = draw ? "crosshair" : h.mode === "resize" ? "nwse-resize" : "move";
      return;
    }
    const [dx, dy] = [p[0] - d.start[0], p[1] - d.start[1]];
    const r = c.getBoundingClientRect();
    if (!d.box && Math.hypot(dx * r.width, dy * r.height) < 3) return; // a click, not a drag yet
    if (d.mode === "draw") {
      d.box = [Math.min(d.start[0], p[0]), Math.min(d.start[1], p[1]), Math.max(d.start[0], p[0]), Math.max(d.start[1], p[1])];
    } else if (d.mode === "move") {
      const [x0, y0, x1, y1] = d.from;
      const mx = clamp(dx, -x0, 1 - x1), my = clamp(dy, -y0, 1 - y1);
      d.box = [x0 + mx, y0 + my, x1 + mx, y1 + my];
    } else {
      const [x0, y0, x1, y1] = d.from;
      d.box = [x0, y0, clamp(x1 + dx, x0 + REF_MIN, 1), clamp(y1 + dy, y0 + REF_MIN, 1)];
    }
    drawReference();
  });
  const finish = () => {
    const d = appearance.drag;
    appearance.drag = null;
    if (!d) return;
    if (d.mode === "draw") {
      const big = d.box && d.box[2] - d.box[0] >= REF_MIN && d.box[3] - d.box[1] >= REF_MIN;
      if (big && appearance.boxes.length < state.info.max_objects) {
        const b = { id: appearance.nextId++, name: $("ref-class").value, box: d.box };
        appearance.boxes.push(b);
        appearance.picked = b.id;
        appearance.note = `Drew box ${appearance.boxes.length - 1}: ${b.name} (its class can be changed above).`;
        appearance.drawing = false;
      } else if (big) {
        appearance.note = `At most ${state.info.max_objects} boxes.`;
      } else {
        appearance.picked = null; // a click beside every box
      }
    } else if (d.box) {
      const b = appearance.boxes.find((q) => q.id === d.id);
      if (b) b.box = d.box;
    }
    renderAppearance();
  };
  c.addEventListener("pointerup", finish);
  c.addEventListener("pointercancel", finish);
  c.addEventListener("keydown", (event) => {
    if ((event.key === "Delete" || event.key === "Backspace") && pickedBox()) {
      event.preventDefault();
      deleteBox();
    } else if (event.key === "Escape") {
      appearance.drawing = false;
      appearance.picked = null;
      renderAppearance();
    }
  });
}

function deleteBox() {
  const b = pickedBox();
  if (!b) return;
  appearance.boxes = appearance.boxes.filter((q) => q !== b);
  appearance.picked = null;
  appearance.note = `Deleted the ${b.name} box.`;
  renderAppearance();
}

// -- the panel ---------------------------------------------------------------------------------
function renderAppearance() {
  const info = state.info;
  const p = appearance.picture;
  const able = !!(info && info.appearance);
  const panel = $("appearance-panel");
  panel.title = info && !info.appearance ? info.appearance_reason : "";
  $("ref-file").disabled = !able || appearance.busy;
  $("ref-open").classList.toggle("disabled", !able || appearance.busy);
  refCanvas().hidden = !p;
  $("ref-empty").hidden = !!p;
  $("ref-empty-text").textContent = able ? "Drop a picture here, or click to open one"
    : (info ? info.appearance_reason : "loading the model\u2026");
  const select = $("ref-class");
  if (info && select.options.length !== info.objects.length) {
    select.replaceChildren(...info.objects.map((n) => el("option", { value: n, textContent: n })));
  }
  const b = pickedBox();
  if (b) select.value = b.name;
  select.disabled = !p || appearance.busy;
  select.title = b ? `The class of box ${appearance.boxes.indexOf(b)}` : "The class of the next box you draw";
  $("ref-class-label").textContent = b ? `Box ${appearance.boxes.indexOf(b)}` : "New box";
  $("ref-delete").disabled = !b || appearance.busy;
  const draw = $("ref-draw");
  draw.disabled = !p || appearance.busy;
  draw.setAttribute("aria-pressed", String(appearance.drawing));
  $("ref-reset").disabled = !p || appearance.busy || !state.objects.some((o) => o.box || o.shown);
  const ready = able && p && appearance.boxes.length > 0 && state.objects.length > 0 && !appearance.busy;
  $("apply-scene").disabled = !ready;
  const o = selectedObject();
  $("apply-selected").disabled = !ready || !o;
  $("apply-selected").title = o
    ? `${state.objects.indexOf(o)}: ${o.name} takes the appearance of ${b ? `box ${appearance.boxes.indexOf(b)} (${b.name})` : `the picture's ${o.name}`}`
    : "Select an object first (click it in the layout, or point at it in the list)";
  $("ref-target").textContent = !p ? "" : o
    ? `Selected object ${state.objects.indexOf(o)}: ${o.name} \u2190 ${b ? `box ${appearance.boxes.indexOf(b)}: ${b.name}` : `the picture's ${o.name}`}`
    : "Select an object (in the layout or the list) to apply the picture to it alone.";
  $("ref-note").textContent = p ? appearance.note : "";
  $("ref-spinner").hidden = !appearance.busy;
  drawReference();
}

// -- applying it -------------------------------------------------------------------------------
async function applyAppearance(toSelected) {
  const p = appearance.picture;
  const o = toSelected ? selectedObject() : null;
  if (!p || appearance.busy || !state.objects.length || (toSelected && !o)) return;
  const ids = state.objects.map((q) => q.id);
  const body = {
    image: p.url,
    reference: { objects: appearance.boxes.map((b) => b.name), boxes: appearance.boxes.map((b) => b.box.map((v) => +v.toFixed(4))) },
    targets: state.objects.map((q) => q.name),
  };
  const picked = pickedBox();
  if (o && picked) body.mapping = { [state.objects.indexOf(o)]: appearance.boxes.indexOf(picked) };
  appearance.busy = true;
  renderAppearance();
  let answer;
  try {
    answer = await fetchJSON("/api/appearance", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (e) {
    answer = { ok: false, status: 0, data: { error: "cannot reach the server (is `layout2img serve` still running?)" } };
  }
  appearance.busy = false;
  if (!answer.ok) {
    renderAppearance();
    setError(`appearance: ${answer.data.error || `the server answered ${answer.status}`}`, answer.data.errors);
    return;
  }
  const codes = new Map();
  ids.forEach((id, i) => {
    if (answer.data.codes[i] && (!o || id === o.id)) codes.set(id, answer.data.codes[i]);
  });
  const objects = state.objects.filter((q) => codes.has(q.id));
  if (!objects.length) {
    appearance.note = o
      ? `The picture has no ${o.name} box: pick the box whose look it should take, or draw one.`
      : "No scene object has a class the picture's boxes name: give the boxes the scene's classes.";
    renderAppearance();
    return;
  }
  // the image before: exact only when it shows the scene as it is (no request on its way)
  const entry = rememberForUndo("the appearance change", $("spinner").hidden && !$("result-image").classList.contains("stale"));
  for (const q of objects) q.code = codes.get(q.id);
  const names = objects.map((q) => `${state.objects.indexOf(q)}: ${q.name}`);
  const others = o ? 0 : state.objects.length - names.length;
  appearance.note = `Applied ${p.name}'s appearance to ${names.join(", ")}${others
    ? ` (${others} other object(s) keep theirs: the picture has no box of their class)` : ""}. Undo restores it.`;
  changed({ now: true });
  entry.version = state.version; // nothing but this change since: Undo shows the image before exactly
}

function setupAppearance() {
  setupRefEvents();
  const input = $("ref-file");
  input.addEventListener("change", () => {
    const file = input.files[0];
    input.value = "";
    openPicture(file);
  });
  const panel = $("appearance-panel");
  const files = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
  for (const kind of ["dragenter", "dragover"]) {
    panel.addEventListener(kind, (event) => {
      if (!files(event) || !(state.info && state.info.appearance)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      panel.classList.add("dragover");
    });
  }
  panel.addEventListener("dragleave", (event) => {
    if (!panel.contains(event.relatedTarget)) panel.classList.remove("dragover");
  });
  panel.addEventListener("drop", (event) => {
    panel.classList.remove("dragover");
    if (!files(event)) return;
    event.preventDefault();
    if (state.info && state.info.appearance) openPicture(event.dataTransfer.files[0]);
  });
  $("ref-class").addEventListener("change", () => {
    const b = pickedBox();
    if (b) b.name = $("ref-class").value;
    renderAppearance();
  });
  $("ref-delete").addEventListener("click", deleteBox);
  $("ref-draw").addEventListener("click", () => {
    appearance.drawing = !appearance.drawing;
    if (appearance.drawing) appearance.picked = null; // the class picker now says the new box's class
    renderAppearance();
  });
  $("ref-reset").addEventListener("click", () => {
    appearance.boxes = sceneBoxes();
    appearance.picked = null;
    appearance.note = "The scene's objects at their current boxes again.";
    renderAppearance();
  });
  $("apply-scene").addEventListener("click", () => applyAppearance(false));
  $("apply-selected").addEventListener("click", () => applyAppearance(true));
}
