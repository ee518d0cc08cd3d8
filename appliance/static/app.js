// The page follows the appliance's state through server-sent events (/api/events/live) and falls back
// to polling /api/status if the event stream is unavailable. No external resources: the Pi is often
// on a network without internet.
"use strict";

const $ = (id) => document.getElementById(id);
const live = $("live");
const toggle = $("camera-toggle");
const stateText = $("camera-state");
const offline = $("offline");
const offlineText = $("offline-text");
const motion = $("motion-indicator");
const errorText = $("camera-error");
const eventsList = $("events");
const eventsEmpty = $("events-empty");

let current = { on: document.body.dataset.on === "true", state: document.body.dataset.state };
let streaming = false;
let retryTimer = null;

function startStream() {
  if (streaming) return;
  streaming = true;
  live.hidden = false;
  offline.hidden = true;
  live.dataset.loaded = "false";
  live.src = "/stream.mjpg?t=" + Date.now();
}

function stopStream(message) {
  streaming = false;
  clearTimeout(retryTimer);
  live.dataset.loaded = "false";
  live.removeAttribute("src");
  live.hidden = true;
  offline.hidden = false;
  offlineText.textContent = message;
}

// An MJPEG <img> fires "load" with its first frame: from then on the picture is live.
live.addEventListener("load", () => { if (streaming) live.dataset.loaded = "true"; });

// The stream ends when the camera goes off or errors; if it should be on, reconnect shortly.
live.addEventListener("error", () => {
  streaming = false;
  live.dataset.loaded = "false";
  if (current.state === "on") {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => current.state === "on" && startStream(), 1000);
  }
});

function renderCamera(status) {
  current = { on: status.on, state: status.state };
  document.body.dataset.state = status.state;
  document.body.dataset.on = String(status.on);
  stateText.textContent = status.state;
  toggle.textContent = status.on ? "Turn off" : "Turn on";
  toggle.setAttribute("aria-pressed", String(status.on));
  errorText.hidden = !status.error;
  errorText.textContent = status.error ? "Camera problem: " + status.error : "";
  if (status.state === "on") startStream();
  else if (status.state === "off") stopStream("The camera is off.");
  else if (status.state === "starting") stopStream("The camera is starting…");
  else if (status.state === "stopping") stopStream("The camera is stopping…");
  else if (status.state === "error") stopStream("The camera is not delivering pictures; retrying…");
}

function renderMotion(active) {
  motion.dataset.active = String(active);
  motion.textContent = active ? "Motion" : "No motion";
}

function renderStats(s) {
  $("fps").textContent = (s.fps || 0).toFixed(1);
  $("viewers").textContent = s.viewers ?? 0;
  if (s.motion) renderMotion(s.motion.active);
}

function formatTime(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleString() : "…";
}

function eventItem(ev) {
  const li = document.createElement("li");
  li.dataset.id = ev.id;
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = (ev.kind === "snapshot" ? "Snapshot at " : "Motion at ") + formatTime(ev.started_at);
  if (ev.has_snapshot !== false) img.src = "/api/events/" + encodeURIComponent(ev.id) + "/snapshot.jpg";
  const meta = document.createElement("div");
  meta.className = "meta";
  const when = document.createElement("time");
  when.dateTime = new Date(ev.started_at * 1000).toISOString();
  when.textContent = (ev.kind === "snapshot" ? "📷 " : "") + formatTime(ev.started_at);
  if (ev.kind !== "snapshot" && ev.ended_at) when.textContent += " · " + Math.max(1, Math.round(ev.ended_at - ev.started_at)) + " s";
  const del = document.createElement("button");
  del.type = "button";
  del.textContent = "✕";
  del.title = "Delete this event";
  del.addEventListener("click", async () => {
    const r = await fetch("/api/events/" + encodeURIComponent(ev.id), { method: "DELETE" });
    if (r.ok || r.status === 404) li.remove();
    eventsEmpty.hidden = eventsList.children.length > 0;
  });
  meta.append(when, del);
  li.append(img, meta);
  return li;
}

function addEvent(ev) {
  const existing = eventsList.querySelector(`li[data-id="${CSS.escape(ev.id)}"]`);
  if (existing) existing.replaceWith(eventItem(ev));
  else eventsList.prepend(eventItem(ev));
  while (eventsList.children.length > 24) eventsList.lastElementChild.remove();
  eventsEmpty.hidden = true;
}

async function loadEvents() {
  try {
    const r = await fetch("/api/events?limit=24");
    if (!r.ok) return;
    const body = await r.json();
    eventsList.replaceChildren(...body.events.map(eventItem));
    eventsEmpty.hidden = body.events.length > 0;
  } catch (e) { /* the list stays as it is; the next event adds itself */ }
}

async function refreshStatus() {
  try {
    const r = await fetch("/api/status");
    if (!r.ok) return;
    const s = await r.json();
    renderCamera(s.camera);
    renderStats(s);
  } catch (e) { stateText.textContent = "unreachable"; }
}

toggle.addEventListener("click", async () => {
  toggle.disabled = true;
  try {
    const r = await fetch("/api/camera/toggle", { method: "POST" });
    const body = await r.json();
    if (r.ok) renderCamera(body);
    else errorText.hidden = false, errorText.textContent = body.error || "Request failed";
  } catch (e) {
    errorText.hidden = false;
    errorText.textContent = "The appliance did not answer.";
  } finally {
    toggle.disabled = false;
  }
});

let pollTimer = null;
function connectEvents() {
  if (!window.EventSource) { pollTimer = setInterval(refreshStatus, 2000); return; }
  const source = new EventSource("/api/events/live");
  source.addEventListener("state", (e) => renderCamera(JSON.parse(e.data)));
  source.addEventListener("status", (e) => renderStats(JSON.parse(e.data)));
  source.addEventListener("motion", (e) => {
    const m = JSON.parse(e.data);
    if (m.kind === "start" || m.kind === "end") renderMotion(m.kind === "start");
    addEvent(m.event);
  });
  source.addEventListener("motion_settings", (e) => renderMotionSettings(JSON.parse(e.data)));
  source.addEventListener("open", () => { clearInterval(pollTimer); pollTimer = null; refreshStatus(); });
  source.addEventListener("error", () => {
    // EventSource reconnects by itself; poll meanwhile so the page never goes stale.
    if (!pollTimer) pollTimer = setInterval(refreshStatus, 2000);
  });
}

// --- motion settings and zones -----------------------------------------------------------------
// Zones are polygons in fractions of the picture, drawn by clicking its corners on the live image.
const motionEnabled = $("motion-enabled");
const sensitivity = $("motion-sensitivity");
const zoneMode = $("zone-mode");
const zoneDraw = $("zone-draw");
const zoneSave = $("zone-save");
const zoneCancel = $("zone-cancel");
const zonesClear = $("zones-clear");
const zonesText = $("zones-text");
const zoneHelp = $("zone-help");
const zoneDraft = $("zone-draft");
const zoneShape = $("zone-draft-shape");
const motionError = $("motion-error");
let motionSettings = { enabled: true, sensitivity: "medium", zones: [] };
let draft = null;  // the corners placed so far while drawing, else null

function renderMotionSettings(m) {
  motionSettings = m;
  motionEnabled.checked = m.enabled;
  sensitivity.value = m.sensitivity;
  zonesClear.disabled = m.zones.length === 0;
  zonesText.textContent = m.zones.length === 0 ? "No zones: the whole picture is watched."
    : "Zones: " + m.zones.map((z) => z.name + " (" + (z.mode === "include" ? "watched" : "ignored") + ")").join(", ");
  document.body.dataset.zones = String(m.zones.length);
}

async function putMotion(body) {
  motionError.hidden = true;
  try {
    const r = await fetch("/api/motion", { method: "PUT", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify(body) });
    const answer = await r.json();
    if (r.ok) renderMotionSettings(answer);
    else { motionError.hidden = false; motionError.textContent = answer.error || "Request failed"; }
  } catch (e) {
    motionError.hidden = false;
    motionError.textContent = "The appliance did not answer.";
  }
}

async function loadMotion() {
  try {
    const r = await fetch("/api/motion");
    if (r.ok) renderMotionSettings(await r.json());
  } catch (e) { /* shown as it was; the live feed brings changes */ }
}

// Where the picture really is inside the <img> box (object-fit: contain leaves bars).
function pictureRect() {
  const box = live.getBoundingClientRect();
  const w = live.naturalWidth || box.width, h = live.naturalHeight || box.height;
  const scale = Math.min(box.width / w, box.height / h);
  return { left: box.left + (box.width - w * scale) / 2, top: box.top + (box.height - h * scale) / 2,
           width: w * scale, height: h * scale };
}

function renderDraft() {
  zoneDraft.toggleAttribute("hidden", draft === null);  // an <svg> has no .hidden property
  if (draft === null) return;
  const pic = pictureRect(), view = $("view").getBoundingClientRect();
  zoneDraft.style.left = (pic.left - view.left) + "px";
  zoneDraft.style.top = (pic.top - view.top) + "px";
  zoneDraft.style.width = pic.width + "px";
  zoneDraft.style.height = pic.height + "px";
  zoneShape.setAttribute("points", draft.map(([x, y]) => x + "," + y).join(" "));
  zoneSave.disabled = draft.length < 3;
}

function setDrawing(on) {
  draft = on ? [] : null;
  document.body.dataset.drawing = String(on);
  zoneDraw.hidden = on;
  zoneSave.hidden = zoneCancel.hidden = zoneHelp.hidden = !on;
  renderDraft();
}

live.addEventListener("click", (e) => {
  if (draft === null) return;
  const pic = pictureRect();
  const clamp = (v) => Math.min(1, Math.max(0, Math.round(v * 1000) / 1000));
  draft.push([clamp((e.clientX - pic.left) / pic.width), clamp((e.clientY - pic.top) / pic.height)]);
  renderDraft();
});
zoneDraw.addEventListener("click", () => setDrawing(true));
zoneCancel.addEventListener("click", () => setDrawing(false));
zoneSave.addEventListener("click", async () => {
  const zone = { name: "zone " + (motionSettings.zones.length + 1), mode: zoneMode.value, points: draft };
  setDrawing(false);
  await putMotion({ zones: [...motionSettings.zones, zone] });
});
zonesClear.addEventListener("click", () => putMotion({ zones: [] }));
motionEnabled.addEventListener("change", () => putMotion({ enabled: motionEnabled.checked }));
sensitivity.addEventListener("change", () => putMotion({ sensitivity: sensitivity.value }));

renderCamera({ on: current.on, state: current.state, error: null });
refreshStatus();
loadEvents();
loadMotion();
connectEvents();
