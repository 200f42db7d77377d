// layout2img editor: restyling an object. With fitted style clusters, "restyle" steps the object
// through its class's clusters (0..k-1, then a random draw) and a row of swatches shows them:
// each the mean colour the model gives that cluster (GET /api/styles); without clusters it draws anew.
"use strict";

const styleAnswers = new Map(); // class name -> /api/styles answer
const styleRequests = new Map(); // class name -> the pending request

function clusterCount(name) {
  const counts = state.info && state.info.style_clusters;
  return (counts && counts[name]) || 0;
}

function loadStyles(name) {
  if (styleAnswers.has(name)) return Promise.resolve(styleAnswers.get(name));
  if (!styleRequests.has(name)) {
    const request = fetchJSON(`/api/styles?object=${encodeURIComponent(name)}`).then((answer) => {
      styleRequests.delete(name);
      if (!answer.ok) throw new Error(answer.data.error || `cannot read the style clusters of ${name}`);
      styleAnswers.set(name, answer.data);
      return answer.data;
    });
    styleRequests.set(name, request);
  }
  return styleRequests.get(name);
}

// The cluster an object is drawn with, or null: a random draw, or a code an edit found.
function currentCluster(o) {
  return o.cluster != null && o.code && o.code === o.clusterCode ? o.cluster : null;
}

// j: a cluster index, or null for a random draw (a new seed, drawn as the server's --style says).
function pickStyle(o, j) {
  const answer = styleAnswers.get(o.name);
  if (j == null || !answer || j >= answer.clusters.length) {
    o.style = randomSeed();
    o.code = null;
    o.cluster = null;
  } else {
    o.cluster = j;
    o.code = answer.clusters[j].code;
  }
  o.clusterCode = o.code;
  changed({ now: true });
}

function randomTitle() {
  return state.info && state.info.style_source === "cluster"
    ? "random: a new draw (a random cluster of this class)" : "random: a new draw from N(0, I)";
}

// The restyle button of an object's row, and the row of swatches under it (null without clusters).
function restyleControl(o) {
  const enabled = !!(state.info && state.info.style);
  const k = clusterCount(o.name);
  const button = el("button", {
    type: "button", className: "restyle", textContent: "restyle", disabled: !enabled,
    title: k ? `The next of this class's ${k} style clusters, then a random draw` : "A new appearance for this object only",
  });
  if (!k) {
    button.addEventListener("click", () => pickStyle(o, null));
    return { button, swatches: null };
  }
  const current = currentCluster(o);
  button.addEventListener("click", () => {
    const now = currentCluster(o);
    const next = now == null ? 0 : now + 1; // after the last cluster: a random draw (j = k)
    loadStyles(o.name).then(() => pickStyle(o, next), (e) => setError(e.message));
  });
  const chips = [];
  for (let j = 0; j <= k; j++) {
    const random = j === k;
    const chip = el("button", {
      type: "button", className: `style-chip${random ? " random" : ""}`, textContent: random ? "?" : "",
      title: random ? randomTitle() : `style cluster ${j}`, "aria-label": random ? "random style" : `style cluster ${j}`,
      disabled: !enabled,
    });
    const on = random ? current == null && !o.code : current === j;
    chip.classList.toggle("current", on);
    chip.setAttribute("aria-pressed", on ? "true" : "false");
    chip.addEventListener("click", () => loadStyles(o.name).then(() => pickStyle(o, random ? null : j),
      (e) => setError(e.message)));
    chips.push(chip);
  }
  const paint = (answer) => answer.clusters.forEach((c, j) => {
    if (!chips[j]) return;
    chips[j].style.background = c.color;
    chips[j].title = `style cluster ${j}: about ${c.color}`;
  });
  const known = styleAnswers.get(o.name);
  if (known) paint(known);
  else loadStyles(o.name).then(paint, () => chips.forEach((c) => c.classList.add("failed")));
  const label = el("span", { className: "style-label", textContent: "style" });
  return { button, swatches: el("div", { className: "style-chips" }, [label, ...chips]) };
}
