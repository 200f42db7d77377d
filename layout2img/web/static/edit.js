// layout2img editor: text-guided region editing (POST /api/edit, progress, cancel), and the Undo
// of the objects' codes that edits and appearance.js's "Apply" push.
// Uses app.js's state and helpers; app.js calls renderEdit() and pickEditTarget().
"use strict";

const EDIT_POLL_MS = 250;
const UNDO_DEPTH = 20;
const MIN_DRAWN = 0.04; // smallest side of a box drawn on the image (fraction of the image)

const editing = {
  open: false,
  target: null, // "object:<id>" | "box" | "image"
  box: null, // the box drawn on the image, [x0, y0, x1, y1]
  draw: null, // {start, box} while a box is being drawn
  job: null, // the running edit: {id (null until the server answers), version, label, text}
  timer: null,
  undo: [], // {image, codes: Map(object id -> code | null), version, label}: the state before each change
};

const formatClip = (v) => (v == null ? "–" : Number(v).toFixed(3));

function pickEditTarget(id) {
  if (!editing.open || editing.job) return;
  editing.target = `object:${id}`;
  renderEdit();
}

function editTargetObject() {
  return editing.target && editing.target.startsWith("object:")
    ? state.objects.find((o) => `object:${o.id}` === editing.target) : null;
}

function validTarget() {
  if (editing.target === "image") return true;
  if (editing.target === "box") return !!editing.box;
  return !!editTargetObject();
}

function editTargetLabel() {
  const o = editTargetObject();
  if (o) return `${state.objects.indexOf(o)}: ${o.name}`;
  return editing.target === "box" ? "the drawn box" : "the whole image";
}

// the request's target: an object index, a box, or null (the whole image)
function editTargetValue() {
  const o = editTargetObject();
  if (o) return state.objects.indexOf(o);
  if (editing.target === "box") return editing.box.map((v) => +v.toFixed(4));
  return null;
}

function renderEdit() {
  const info = state.info;
  const form = $("edit-form");
  form.hidden = !(info && info.region_edit && editing.open);
  const toggle = $("edit-region");
  toggle.setAttribute("aria-expanded", String(!form.hidden));
  toggle.textContent = form.hidden ? "Edit a region with text\u2026" : "Close text editing";
  if (!validTarget()) {
    const o = state.objects.find((q) => q.id === state.selected) || state.objects[0];
    editing.target = o ? `object:${o.id}` : "image";
  }
  const options = state.objects.map((o, i) => el("option", { value: `object:${o.id}`, textContent: `${i}: ${o.name}` }));
  options.push(el("option", { value: "box", disabled: !editing.box,
    textContent: editing.box ? "the box drawn on the image" : "a box (drag on the image)" }));
  options.push(el("option", { value: "image", textContent: "the whole image" }));
  const select = $("edit-target");
  select.replaceChildren(...options);
  select.value = editing.target;
  const running = !!editing.job;
  for (const id of ["edit-target", "edit-text", "edit-negatives"]) $(id).disabled = running;
  $("edit-modulation").disabled = running || !(info && info.style);
  $("edit-run").disabled = running || !state.objects.length || !$("edit-text").value.trim();
  $("edit-cancel").hidden = !running;
  $("edit-undo").disabled = running || !editing.undo.length;
  $("edit-progress").hidden = !running;
  drawOverlay();
}

// -- the region on the image -------------------------------------------------------------------
function overlayBox() {
  if (editing.draw && editing.draw.box) return editing.draw.box;
  if (editing.target === "box") return editing.box;
  const o = editTargetObject();
  return o ? o.box || o.shown : null;
}

function drawOverlay() {
  const c = $("edit-overlay");
  const show = !$("edit-form").hidden && !$("result-image").hidden;
  c.hidden = !show;
  if (!show) return;
  const ctx = c.getContext("2d");
  const S = CANVAS_SIDE;
  ctx.clearRect(0, 0, S, S);
  const b = overlayBox();
  if (!b) return;
  const [x0, y0, x1, y1] = [b[0] * S, b[1] * S, b[2] * S, b[3] * S];
  const o = editTargetObject();
  const rect = [x0 + 1.5, y0 + 1.5, Math.max(1, x1 - x0 - 3), Math.max(1, y1 - y0 - 3)];
  ctx.lineWidth = 3;
  ctx.strokeStyle = "rgba(0, 0, 0, 0.6)"; // a dark line under light dashes: the outline shows on any image
  ctx.strokeRect(...rect);
  ctx.lineWidth = 2;
  ctx.setLineDash([6, 4]);
  ctx.strokeStyle = o && !(editing.draw && editing.draw.box) ? labelColor(o.name).css : "#ffffff";
  ctx.strokeRect(...rect);
  ctx.setLineDash([]);
}

function setupOverlay() {
  const c = $("edit-overlay");
  const dpr = window.devicePixelRatio || 1;
  c.width = Math.round(CANVAS_SIDE * dpr);
  c.height = Math.round(CANVAS_SIDE * dpr);
  c.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
  const position = (event) => {
    const r = c.getBoundingClientRect();
    return [clamp((event.clientX - r.left) / r.width, 0, 1), clamp((event.clientY - r.top) / r.height, 0, 1)];
  };
  c.addEventListener("pointerdown", (event) => {
    if (editing.job) return;
    event.preventDefault();
    c.setPointerCapture(event.pointerId);
    editing.draw = { start: position(event), box: null };
  });
  c.addEventListener("pointermove", (event) => {
    const d = editing.draw;
    if (!d) return;
    const [x, y] = position(event);
    const [sx, sy] = d.start;
    d.box = [Math.min(sx, x), Math.min(sy, y), Math.max(sx, x), Math.max(sy, y)];
    drawOverlay();
  });
  const finish = (event) => {
    const d = editing.draw;
    editing.draw = null;
    if (!d) return;
    if (d.box && d.box[2] - d.box[0] >= MIN_DRAWN && d.box[3] - d.box[1] >= MIN_DRAWN) {
      editing.box = d.box;
      editing.target = "box";
    } else if (event.type === "pointerup") { // a click: the object under it
      const h = hit(position(event));
      if (h) editing.target = `object:${h.o.id}`;
    }
    renderEdit();
  };
  c.addEventListener("pointerup", finish);
  c.addEventListener("pointercancel", finish);
}

// -- running an edit ---------------------------------------------------------------------------
async function startEdit(event) {
  event.preventDefault();
  if (editing.job || !state.objects.length || !validTarget()) return;
  const text = $("edit-text").value.trim();
  if (!text) return;
  const negatives = $("edit-negatives").value.split(",").map((t) => t.trim()).filter(Boolean);
  const body = { ...sceneRequest(), text, negatives, target: editTargetValue(), modulation: $("edit-modulation").checked };
  const job = { id: null, version: state.version, label: editTargetLabel(), text };
  editing.job = job;
  showEditProgress({ state: "queued" });
  renderEdit();
  let answer;
  try {
    answer = await fetchJSON("/api/edit", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (e) {
    answer = { ok: false, status: 0, data: { error: "cannot reach the server (is `layout2img serve` still running?)" } };
  }
  if (!answer.ok) {
    editing.job = null;
    renderEdit();
    setError(answer.data.error || `the edit was refused (${answer.status})`, answer.data.errors);
    return;
  }
  job.id = answer.data.job;
  showEditProgress(answer.data);
  pollEdit();
}

function pollEdit() {
  clearTimeout(editing.timer);
  editing.timer = setTimeout(async () => {
    const job = editing.job;
    if (!job || !job.id) return;
    let answer;
    try {
      answer = await fetchJSON(`/api/edit/${encodeURIComponent(job.id)}`);
    } catch (e) {
      answer = { ok: false, status: 0, data: { error: "cannot reach the server" } };
    }
    if (editing.job !== job) return;
    if (answer.ok && (answer.data.state === "queued" || answer.data.state === "running")) {
      showEditProgress(answer.data);
      pollEdit();
      return;
    }
    editing.job = null;
    if (answer.ok) finishEdit(job, answer.data);
    else setError(`edit: ${answer.data.error || `the server answered ${answer.status}`}`);
    renderEdit();
  }, EDIT_POLL_MS);
}

function showEditProgress(data) {
  let text = "starting\u2026";
  let done = 0;
  if (data.state === "queued") {
    text = "waiting for the model\u2026";
  } else if (data.restarts != null && data.steps != null) {
    const per = data.steps + 1; // step 0 is each run's start
    done = (data.restart * per + data.step + 1) / (data.restarts * per);
    text = `restart ${data.restart + 1}/${data.restarts} \u00b7 step ${data.step}/${data.steps} \u00b7 `
      + `CLIP ${formatClip(data.clip)} (best ${formatClip(data.best_clip)})`;
  }
  if (data.cancel_requested) text = `cancelling\u2026 ${text}`;
  $("edit-bar").value = done;
  $("edit-progress-text").textContent = text;
}

function finishEdit(job, data) {
  const clips = `CLIP ${formatClip(data.clip_before)} \u2192 ${formatClip(data.clip_after)}`;
  if (data.state === "cancelled") {
    setStatus("Edit cancelled; the image is unchanged.");
  } else if (data.state !== "done") {
    setError(`edit failed: ${data.error || data.state}`);
  } else if (job.version !== state.version) {
    setStatus("The scene changed during the edit, so its result was not applied.");
  } else if (!data.improved) {
    setStatus(`No better image found for \u201c${job.text}\u201d (${clips}); the image is unchanged.`);
  } else {
    rememberForUndo("the edit");
    if (data.style_codes) state.objects.forEach((o, i) => { o.code = data.style_codes[i]; });
    if (state.result) state.result.image = data.image;
    const img = $("result-image");
    img.src = data.image;
    img.hidden = false;
    img.classList.remove("stale");
    $("placeholder").hidden = true;
    setStatus(`Edited ${job.label} to \u201c${job.text}\u201d: ${clips} \u00b7 ${data.seconds} s`);
  }
}

async function cancelEdit() {
  const job = editing.job;
  if (!job || !job.id) return;
  try {
    const answer = await fetchJSON(`/api/edit/${encodeURIComponent(job.id)}/cancel`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}",
    });
    if (answer.ok && editing.job === job) showEditProgress(answer.data);
  } catch (e) {
    setError("cannot reach the server to cancel the edit");
  }
}

// Push the state before a change of the objects' codes (an edit, an appearance from a picture) onto
// the Undo stack: the codes, and the image when ``exact`` (it shows the scene as it is now).
function rememberForUndo(label, exact = true) {
  const entry = {
    image: exact && state.result ? state.result.image : null,
    codes: new Map(state.objects.map((o) => [o.id, o.code])),
    version: state.version,
    label,
  };
  editing.undo.push(entry);
  if (editing.undo.length > UNDO_DEPTH) editing.undo.shift();
  renderEdit();
  return entry;
}

function undoEdit() {
  if (editing.job) return;
  const entry = editing.undo.pop();
  if (!entry) return;
  for (const o of state.objects) if (entry.codes.has(o.id)) o.code = entry.codes.get(o.id);
  if (entry.version === state.version && entry.image && state.result) {
    // nothing changed since: the image before it, exactly (an image still on its way is dropped)
    state.seq++;
    clearTimeout(state.timer);
    setBusy(false);
    state.result.image = entry.image;
    const img = $("result-image");
    img.src = entry.image;
    img.classList.remove("stale");
    setStatus(`Undone: the image before ${entry.label}.`);
    render();
  } else {
    setStatus(`Undone: the styles before ${entry.label} (the scene has changed since, so it is drawn again).`);
    changed({ now: true });
  }
}

function setupEditing() {
  setupOverlay();
  $("edit-region").addEventListener("click", () => {
    editing.open = !editing.open;
    renderEdit();
    if (editing.open) $("edit-text").focus();
  });
  $("edit-form").addEventListener("submit", startEdit);
  $("edit-target").addEventListener("change", () => { editing.target = $("edit-target").value; renderEdit(); });
  $("edit-text").addEventListener("input", renderEdit);
  $("edit-cancel").addEventListener("click", cancelEdit);
  $("edit-undo").addEventListener("click", undoEdit);
}
