// semiseg annotate: the page. niivue shows the image and holds the drawing; the server keeps the
// versions (every stroke is sent to it), propagates and saves. The image arrives in niivue's own
// voxel order (closest to RAS+), so niivue's drawBitmap and the server's arrays share one layout.
/* global niivue */

const $ = (id) => document.getElementById(id);
const state = {
  meta: null, label: 1, tool: "pen", penSize: 3, overlay: true, opacity: 0.6, busy: false,
  sync: Promise.resolve(), lastPropagate: null, errors: [],
};
window.semiseg = state; // for tests and the curious

function status(msg, isError = false) {
  const el = $("status");
  el.textContent = msg;
  el.className = isError ? "error" : "";
  if (isError) state.errors.push(msg);
}

async function api(path, options = {}) {
  const r = await fetch(path, options);
  const type = r.headers.get("content-type") || "";
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    if (type.includes("json")) msg = (await r.json()).error || msg;
    throw new Error(msg);
  }
  return type.includes("json") ? r.json() : new Uint8Array(await r.arrayBuffer());
}

if (typeof niivue === "undefined") {
  status("the viewer (niivue) did not load: run `npm ci --prefix src/semiseg/annotate/static` (see the README)", true);
  throw new Error("niivue missing");
}
const gl2 = document.createElement("canvas").getContext("webgl2");
state.webgl2 = !!gl2;
if (!gl2) {
  status("this browser has no WebGL2, which the viewer needs (enable hardware acceleration)", true);
  throw new Error("no WebGL2");
}

const nv = new niivue.Niivue({
  backColor: [0.08, 0.08, 0.09, 1], show3Dcrosshair: false, isColorbar: false, penSize: state.penSize,
  clipPlaneHotKey: "", cycleClipPlaneHotKey: "", viewModeHotKey: "", isNearestInterpolation: true,
  dragMode: niivue.DRAG_MODE.contrast, crosshairColor: [0.3, 0.8, 1, 0.6], crosshairWidth: 1,
});
state.nv = nv;
const VIEWS = {
  axial: niivue.SLICE_TYPE.AXIAL, coronal: niivue.SLICE_TYPE.CORONAL,
  sagittal: niivue.SLICE_TYPE.SAGITTAL, multiplanar: niivue.SLICE_TYPE.MULTIPLANAR,
};

function drawColormap(labels) {
  const cm = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: ["background"] };
  for (const l of labels) {
    cm.R.push(l.color[0]); cm.G.push(l.color[1]); cm.B.push(l.color[2]); cm.A.push(255);
    cm.I.push(l.value); cm.labels.push(l.name);
  }
  return cm;
}

async function loadLabels() {
  const bytes = await api("/api/labels");
  if (bytes.length !== nv.drawBitmap.length) throw new Error(`label map of ${bytes.length} voxels, drawing ${nv.drawBitmap.length}`);
  nv.drawBitmap.set(bytes);
  nv.refreshDrawing(true);
}

function currentSlice() {
  const vox = nv.frac2vox(nv.scene.crosshairPos);
  return Math.round(vox[state.meta.slice_dim]);
}

function showMeta(meta) {
  state.meta = meta;
  $("undo").disabled = !meta.can_undo || state.busy;
  $("redo").disabled = !meta.can_redo || state.busy;
  $("propagate").disabled = state.busy;
  $("method").textContent = `Propagate uses ${meta.method_label}; slices along the ${meta.slice_view} view are annotated once painted.`;
  drawMarkers();
}

function drawMarkers() {
  const m = state.meta;
  if (!m) return;
  const n = m.shape[m.slice_dim];
  const box = $("markers");
  box.innerHTML = "";
  for (const k of m.annotated) {
    const t = document.createElement("div");
    const empty = m.annotated_empty.includes(k);
    t.className = empty ? "tick empty" : "tick";
    t.style.left = `calc(${(100 * (k + 0.5)) / n}% - 1px)`;
    t.title = `slice ${k + 1} (annotated${empty ? " as empty" : ""})`;
    t.dataset.slice = k;
    box.appendChild(t);
  }
  const cur = currentSlice();
  const c = document.createElement("div");
  c.className = "cur";
  c.style.left = `${(100 * (cur + 0.5)) / n}%`;
  box.appendChild(c);
  const ann = m.annotated_empty.includes(cur) ? "annotated as empty" : m.annotated.includes(cur) ? "annotated" : "not annotated";
  $("sliceinfo").textContent = `${m.slice_view} slice ${cur + 1} / ${n} (${ann}); ${m.annotated.length} annotated; version ${m.version + 1} / ${m.versions}${m.saved ? ", saved" : ""}`;
}

function goToSlice(k) {
  const cur = currentSlice();
  const d = [0, 0, 0];
  d[state.meta.slice_dim] = k - cur;
  nv.moveCrosshairInVox(d[0], d[1], d[2]);
  drawMarkers();
}

function moveSlice(delta) {
  // the slice axis of the view shown (multiplanar: the propagation axis)
  const dims = { [VIEWS.axial]: 2, [VIEWS.coronal]: 1, [VIEWS.sagittal]: 0 };
  const dim = dims[nv.opts.sliceType] ?? state.meta.slice_dim;
  const d = [0, 0, 0];
  d[dim] = delta;
  nv.moveCrosshairInVox(d[0], d[1], d[2]);
  drawMarkers();
}

function setView(name) {
  nv.setSliceType(VIEWS[name]);
  for (const b of document.querySelectorAll("#views button")) b.classList.toggle("active", b.dataset.view === name);
}

function setPen() {
  const fill = state.tool === "fill";
  nv.setPenValue(state.tool === "erase" ? 0 : state.label, fill);
  nv.opts.penSize = state.penSize;
  $("pensize").textContent = state.penSize;
  for (const b of document.querySelectorAll("#tools button")) b.classList.toggle("active", b.dataset.tool === state.tool);
  for (const b of document.querySelectorAll("#labels button")) b.classList.toggle("active", Number(b.dataset.label) === state.label);
}

function setOverlay() {
  nv.setDrawOpacity(state.overlay ? state.opacity : 0);
  $("overlay").checked = state.overlay;
}

function setWindow(i) {
  const w = state.meta.windows[i];
  const v = nv.volumes[0];
  v.cal_min = w.min;
  v.cal_max = w.max;
  nv.updateGLVolume();
}

async function gzip(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// every stroke goes to the server (in order), which records a version
function sendDrawing() {
  const copy = nv.drawBitmap.slice();
  state.sync = state.sync.then(async () => {
    try {
      const body = await gzip(copy);
      const r = await api("/api/drawing", {
        method: "POST", body, headers: { "Content-Type": "application/octet-stream", "Content-Encoding": "gzip" },
      });
      showMeta(r.meta);
    } catch (e) {
      status(`the stroke was not recorded: ${e.message}`, true);
      await reload();
    }
  });
  return state.sync;
}

async function reload() {
  try {
    showMeta(await api("/api/meta"));
    await loadLabels();
  } catch (e) {
    status(e.message, true);
  }
}

async function act(path, what) {
  await state.sync;
  try {
    const r = await api(path, { method: "POST" });
    await loadLabels();
    showMeta(r.meta);
    status(what);
    return r;
  } catch (e) {
    status(e.message, true);
    return null;
  }
}

function setBusy(b) {
  state.busy = b;
  $("blocker").hidden = !b;
  if (state.meta) showMeta(state.meta);
}

async function propagate() {
  if (state.busy) return;
  const t0 = performance.now();
  setBusy(true);
  status(`propagating (${state.meta.method_label})...`);
  try {
    await state.sync;
    const r = await api("/api/propagate", { method: "POST" });
    await loadLabels();
    const s = (performance.now() - t0) / 1000;
    state.lastPropagate = { seconds: s, server_seconds: r.seconds, references: r.references };
    state.busy = false;
    showMeta(r.meta);
    $("elapsed").textContent = `last propagation: ${s.toFixed(2)} s (server ${r.seconds.toFixed(2)} s, ${r.references.length} annotated slices)`;
    status(`propagated from ${r.references.length} annotated slice(s) in ${s.toFixed(2)} s; correct any slice and propagate again`);
  } catch (e) {
    status(`propagation failed: ${e.message}`, true);
  } finally {
    setBusy(false);
  }
}

async function save() {
  await state.sync;
  try {
    const r = await api("/api/save", { method: "POST" });
    showMeta(r.meta);
    status(`saved ${r.out}`);
  } catch (e) {
    status(`not saved: ${e.message}`, true);
  }
}

function onKey(e) {
  const t = e.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "SELECT") && t.type !== "range" && t.type !== "checkbox") return;
  const k = e.key;
  const ctrl = e.ctrlKey || e.metaKey;
  let done = true;
  if (ctrl && (k === "z" || k === "Z") && e.shiftKey) act("/api/redo", "redone");
  else if (ctrl && (k === "z" || k === "Z")) act("/api/undo", "undone");
  else if (ctrl && (k === "y" || k === "Y")) act("/api/redo", "redone");
  else if (ctrl && (k === "s" || k === "S")) save();
  else if (ctrl) done = false;
  else if (k === "ArrowUp" || k === "PageUp") moveSlice(1);
  else if (k === "ArrowDown" || k === "PageDown") moveSlice(-1);
  else if (k >= "1" && k <= "9") { if (Number(k) <= state.meta.labels.length) { state.label = Number(k); if (state.tool === "erase") state.tool = "pen"; setPen(); } }
  else if (k === "[") { state.penSize = Math.max(1, state.penSize - 1); setPen(); }
  else if (k === "]") { state.penSize = Math.min(64, state.penSize + 1); setPen(); }
  else if (k === "d" || k === "D") { state.tool = "pen"; setPen(); }
  else if (k === "f" || k === "F") { state.tool = "fill"; setPen(); }
  else if (k === "e" || k === "E") { state.tool = "erase"; setPen(); }
  else if (k === "p" || k === "P") propagate();
  else if (k === "x" || k === "X") act(`/api/empty?slice=${currentSlice()}`, "slice annotated as empty");
  else if (k === "o" || k === "O") { state.overlay = !state.overlay; setOverlay(); }
  else if (k === "a" || k === "A") setView("axial");
  else if (k === "c" || k === "C") setView("coronal");
  else if (k === "s" || k === "S") setView("sagittal");
  else if (k === "m" || k === "M") setView("multiplanar");
  else done = false;
  if (done) { e.preventDefault(); e.stopPropagation(); }
}

async function main() {
  const meta = await api("/api/meta");
  $("file").textContent = `${meta.image.join(", ")} -> ${meta.out}`;
  await nv.attachToCanvas($("gl"));
  await nv.loadVolumes([{ url: "/api/image.nii", name: "image.nii" }]);
  nv.setDrawingEnabled(true);
  nv.setDrawColormap(drawColormap(meta.labels));
  showMeta(meta);
  await loadLabels();
  const labs = $("labels");
  for (const l of meta.labels) {
    const b = document.createElement("button");
    b.dataset.label = l.value;
    b.innerHTML = `<span class="swatch" style="background:rgb(${l.color.join(",")})"></span>`;
    b.append(`${l.value <= 9 ? l.value + " " : ""}${l.name}`);
    b.onclick = () => { state.label = l.value; if (state.tool === "erase") state.tool = "pen"; setPen(); };
    labs.appendChild(b);
  }
  const sel = $("window");
  meta.windows.forEach((w, i) => {
    const o = document.createElement("option");
    o.value = i;
    o.textContent = w.name === "auto" ? "auto (0.5-99.5 %)" : w.name;
    sel.appendChild(o);
  });
  sel.value = meta.windows.findIndex((w) => w.name === "plan") >= 0 ? meta.windows.findIndex((w) => w.name === "plan") : 0;
  setWindow(Number(sel.value));
  sel.onchange = () => setWindow(Number(sel.value));
  for (const b of document.querySelectorAll("#views button")) b.onclick = () => setView(b.dataset.view);
  for (const b of document.querySelectorAll("#tools button")) b.onclick = () => { state.tool = b.dataset.tool; setPen(); };
  $("undo").onclick = () => act("/api/undo", "undone");
  $("redo").onclick = () => act("/api/redo", "redone");
  $("empty").onclick = () => act(`/api/empty?slice=${currentSlice()}`, "slice annotated as empty");
  $("propagate").onclick = propagate;
  $("save").onclick = save;
  $("opacity").oninput = () => { state.opacity = Number($("opacity").value); setOverlay(); };
  $("overlay").onchange = () => { state.overlay = $("overlay").checked; setOverlay(); };
  $("markers").onclick = (e) => {
    const box = $("markers").getBoundingClientRect();
    const n = state.meta.shape[state.meta.slice_dim];
    const ticks = state.meta.annotated;
    let k = Math.floor(((e.clientX - box.left) / box.width) * n);
    if (ticks.length) k = ticks.reduce((a, b) => (Math.abs(b - k) < Math.abs(a - k) ? b : a));
    goToSlice(k);
  };
  nv.onDrawingChanged = (action) => { if (action === "draw") sendDrawing(); };
  nv.onLocationChange = () => drawMarkers();
  window.addEventListener("keydown", onKey, true);
  setView(meta.slice_view);
  goToSlice(meta.annotated.length ? meta.annotated[0] : Math.floor(meta.shape[meta.slice_dim] / 2));
  setPen();
  setOverlay();
  Object.assign(state, { goToSlice, reload, sendDrawing, propagate });
  state.ready = true;
  status(`${meta.labels.length} label(s); paint a few ${meta.slice_view} slices, then Propagate (P)`);
}

main().catch((e) => status(`the page could not start: ${e.message}`, true));
