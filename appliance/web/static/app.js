// The page follows the appliance's state through server-sent events (/api/events/live) and falls back
// to polling /api/status if the event stream is unavailable. No external resources: the Pi is often
// on a network without internet.
//
// Connections: a browser opens at most 6 at once to one host over HTTP/1.1. A visible tab holds one,
// its live picture (the H.264 or MJPEG stream; none in snapshot mode, which makes short requests). The feed of
// state changes is shared: one visible tab of the browser holds it and passes what it hears to the
// others (BroadcastChannel), so four tabs hold five connections, not eight. A hidden tab holds none:
// its picture, feed and clip replays stop, and start again when it is shown.
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
const recSection = $("recordings");
const recDay = $("rec-day");
const recTimeline = $("rec-timeline");
const recPlayer = $("rec-player");
const recFault = $("rec-fault");
const recNow = $("rec-now");
let recSegments = [];
let recReloadTimer = null;
let recLoadedDay = null;

let current = { on: document.body.dataset.on === "true", state: document.body.dataset.state };
let streaming = false;
let retryTimer = null;
let shown = document.visibilityState !== "hidden";

// --- how the live picture arrives ----------------------------------------------------------------
// H.264 where the browser plays it through Media Source Extensions (ManagedMediaSource on iPhones):
// a sixth of MJPEG's bytes. Else MJPEG; but iOS and iPadOS WebKit (every browser there) show only the
// first picture of an MJPEG stream, so there the page asks for snapshots a few times a second instead.
// iPadOS says "Macintosh" but has touch. A choice made by hand is kept by this browser.
const MODE_KEY = "appliance.view-mode";
const MODES = ["auto", "h264", "mjpeg", "snapshots"];
const SNAPSHOT_INTERVAL = 250;  // ms between snapshot requests: up to 4 pictures a second
const LIVE_LAG = 1.0;  // s behind the newest frame before the H.264 player skips forward
const LIVE_TARGET = 0.1;  // s behind the newest frame it skips to, and plays a tenth faster to keep
const H264_TRIES = 3;  // H.264 streams in a row that end without a picture before MJPEG takes over
const modeChoice = $("view-mode");
const modeText = $("view-mode-text");
const video = $("live-video");
const MSE = window.ManagedMediaSource || window.MediaSource;
let snapshotTimer = null;
let snapshotUrl = null;
let h264 = null;  // the H.264 stream being played: its fetch, MediaSource and buffer
let h264Trouble = null;  // why H.264 did not work on this page: MJPEG stands in until it is reloaded
let h264Misses = 0;

function mjpegAnimates(userAgent, touchPoints) {
  return !(/iPhone|iPad|iPod/.test(userAgent) || (/Macintosh/.test(userAgent) && touchPoints > 1));
}

function h264Plays() {
  return document.body.dataset.h264 === "true" && !!MSE && typeof MSE.isTypeSupported === "function"
    && MSE.isTypeSupported('video/mp4; codecs="avc1.42E01E"');
}

function chosenMode() {
  let chosen = "auto";
  try { chosen = localStorage.getItem(MODE_KEY) || "auto"; } catch (e) { /* storage may be off */ }
  return MODES.includes(chosen) ? chosen : "auto";
}

function viewMode() {
  const chosen = chosenMode();
  if (chosen === "mjpeg" || chosen === "snapshots") return chosen;
  if (h264Plays() && !h264Trouble) return "h264";
  return mjpegAnimates(navigator.userAgent, navigator.maxTouchPoints || 0) ? "mjpeg" : "snapshots";
}

function renderMode() {
  const mode = viewMode(), chosen = chosenMode();
  document.body.dataset.viewMode = mode;
  modeChoice.value = chosen;
  let why = "";
  if (mode !== "h264" && (chosen === "auto" || chosen === "h264")) {
    why = h264Trouble ? "H.264 failed: " + h264Trouble
      : document.body.dataset.h264 !== "true" ? "the appliance serves no H.264 view"
      : "this browser does not play H.264 streams";
    if (mode === "snapshots") why += "; this browser does not play MJPEG either";
  }
  modeText.textContent = (mode === "h264" ? "Live video (H.264)"
    : mode === "mjpeg" ? "Live video (MJPEG stream)"
    : "Snapshots, up to " + Math.round(1000 / SNAPSHOT_INTERVAL) + " a second") + (why ? " (" + why + ")" : "");
}

modeChoice.addEventListener("change", () => {
  try { localStorage.setItem(MODE_KEY, modeChoice.value); } catch (e) { /* this page only */ }
  if (modeChoice.value === "h264") { h264Trouble = null; h264Misses = 0; }  // asked for by hand: try again
  const wasStreaming = streaming;
  stopStream("Switching…");
  renderMode();
  if (wasStreaming || current.state === "on") startStream();
});

function startStream() {
  if (streaming || !shown) return;
  streaming = true;
  offline.hidden = true;
  live.dataset.loaded = video.dataset.loaded = "false";
  const mode = viewMode();
  live.hidden = mode === "h264";
  video.hidden = mode !== "h264";
  if (mode === "h264") startH264();
  else if (mode === "mjpeg") live.src = "/stream.mjpg?t=" + Date.now();
  else nextSnapshot();
}

function stopStream(message) {
  streaming = false;
  clearTimeout(retryTimer);
  clearTimeout(snapshotTimer);
  stopH264();
  live.dataset.loaded = "false";
  live.removeAttribute("src");
  if (snapshotUrl) URL.revokeObjectURL(snapshotUrl);
  snapshotUrl = null;
  live.hidden = video.hidden = true;
  offline.hidden = false;
  offlineText.textContent = message;
}

// After a stream ended by itself: again in a second if the camera should be on.
function retryStream() {
  streaming = false;
  live.dataset.loaded = video.dataset.loaded = "false";
  if (current.state !== "on") return;
  clearTimeout(retryTimer);
  retryTimer = setTimeout(() => current.state === "on" && startStream(), 1000);
}

// --- H.264: fragmented MP4 read from one long response and appended to a MediaSource ---------------
// The appliance sends an init segment, then one fragment per frame from a keyframe on. The player is
// kept near the newest frame: more than LIVE_LAG behind (a stall, a tab in the background), it skips
// forward. X-Media-Epoch (kept in data-epoch) + a frame's media time is when it was captured: the age
// of the frame shown is kept in data-frame-age (seconds), frames shown in data-frames.
function stopH264() {
  const session = h264;
  h264 = null;
  if (!session) return;
  session.abort.abort();
  video.removeAttribute("src");
  video.load();  // let the MediaSource and its decoder go now
  if (session.url) URL.revokeObjectURL(session.url);
}

function h264Failed(session, why) {
  if (h264 !== session) return;
  h264Trouble = why;
  stopH264();
  streaming = false;
  renderMode();
  if (current.state === "on") startStream();
}

// The codec in an init segment's avcC box ("avc1.PPCCLL"); undefined until ftyp and moov are whole.
function initCodec(bytes) {
  let at = 0, moov = null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  while (at + 8 <= bytes.length && moov === null) {
    const size = view.getUint32(at), kind = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    if (size < 8 || at + size > bytes.length) return undefined;
    if (kind === "moov") moov = bytes.subarray(at, at + size);
    at += size;
  }
  if (moov === null) return undefined;
  for (let i = 0; i + 8 <= moov.length; i++) {
    if (moov[i] === 0x61 && moov[i + 1] === 0x76 && moov[i + 2] === 0x63 && moov[i + 3] === 0x43) {
      const hex = (b) => b.toString(16).padStart(2, "0").toUpperCase();
      return "avc1." + hex(moov[i + 5]) + hex(moov[i + 6]) + hex(moov[i + 7]);
    }
  }
  return null;
}

function joined(chunks) {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

function openSource(session) {
  return new Promise((resolve) => {
    const source = new MSE();
    source.addEventListener("sourceopen", () => resolve(source), { once: true });
    // ManagedMediaSource (Safari 17.1 and later, iPhones included) plays only with AirPlay off.
    if (MSE === window.ManagedMediaSource) video.disableRemotePlayback = true;
    session.url = URL.createObjectURL(source);
    video.src = session.url;
  });
}

async function startH264() {
  const session = { abort: new AbortController(), queue: [], buffer: null, url: null, epoch: 0, frames: 0 };
  h264 = session;
  const source = await openSource(session);
  if (h264 !== session) return;
  let response;
  try {
    response = await fetch("/stream.mp4", { cache: "no-store", signal: session.abort.signal });
  } catch (e) {
    if (h264 === session) { stopH264(); retryStream(); }
    return;
  }
  if (h264 !== session) return;
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    // 503 with the camera's state: it is off or between states; the page follows the state.
    if (response.status === 503 && body.state) { stopH264(); retryStream(); return; }
    h264Failed(session, body.error || "HTTP " + response.status);
    return;
  }
  session.epoch = parseFloat(response.headers.get("X-Media-Epoch") || "0");
  video.dataset.epoch = String(session.epoch);
  const reader = response.body.getReader();
  let head = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done || h264 !== session) break;
      if (!session.buffer) {
        head.push(value);
        const bytes = joined(head);
        const codec = initCodec(bytes);
        if (codec === undefined) continue;
        const type = 'video/mp4; codecs="' + codec + '"';
        if (codec === null || !MSE.isTypeSupported(type)) { h264Failed(session, "this browser cannot play " + codec); return; }
        try { session.buffer = source.addSourceBuffer(type); } catch (e) { h264Failed(session, e.message); return; }
        session.buffer.mode = "segments";
        session.buffer.addEventListener("updateend", () => pump(session));
        watchFrames(session);
        head = [bytes];
        session.queue.push(bytes);
      } else session.queue.push(value);
      pump(session);
    }
  } catch (e) {
    if (h264 !== session) return;  // stopped on purpose
  }
  if (h264 !== session) return;
  // The appliance ended the stream: the camera went off, or this viewer was dropped.
  h264Misses = session.frames ? 0 : h264Misses + 1;
  if (h264Misses >= H264_TRIES) { h264Failed(session, "no picture came in " + H264_TRIES + " tries"); return; }
  stopH264();
  retryStream();
}

// Hand what arrived to the SourceBuffer (one append at a time), then keep the player near live.
function pump(session) {
  const buffer = session.buffer;
  if (h264 !== session || !buffer || buffer.updating) return;
  if (session.queue.length) {
    const data = joined(session.queue);
    session.queue = [];
    try { buffer.appendBuffer(data); } catch (e) {
      if (e.name === "QuotaExceededError" && video.currentTime > 1) {  // full: forget the past, try again
        session.queue.unshift(data);
        buffer.remove(0, video.currentTime - 1);
      } else h264Failed(session, e.message || String(e));
    }
    return;
  }
  const ranges = video.buffered;
  if (!ranges.length) return;
  const end = ranges.end(ranges.length - 1), last = ranges.start(ranges.length - 1);
  const lag = end - video.currentTime;
  if (video.currentTime < last || lag > LIVE_LAG) {
    video.currentTime = Math.max(last, end - LIVE_TARGET);  // start, or skip a gap or a stall
  } else if (lag > LIVE_TARGET * 3 || lag < LIVE_TARGET * 2) {
    video.playbackRate = lag > LIVE_TARGET * 3 ? 1.1 : 1;  // a stall's delay is caught up unseen
  }
  if (video.currentTime - ranges.start(0) > 30) {
    buffer.remove(ranges.start(0), video.currentTime - 10);  // a live view keeps no history
  }
  if (video.paused) video.play().catch(() => { /* muted autoplay is allowed; retried at the next fragment */ });
}

// Each frame shown: counted, and its age from capture (the appliance's and this device's clocks).
function watchFrames(session) {
  if (!("requestVideoFrameCallback" in video)) return;
  const onFrame = (now, meta) => {
    if (h264 !== session) return;
    session.frames += 1;
    video.dataset.frames = String(session.frames);
    if (session.frames === 1) video.dataset.loaded = "true";
    video.dataset.frameAge = ((performance.timeOrigin + meta.presentationTime) / 1000
      - (session.epoch + meta.mediaTime)).toFixed(3);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}
video.addEventListener("playing", () => { if (h264) { h264.frames = h264.frames || 1; video.dataset.loaded = "true"; } });

// Snapshot mode: the next picture is asked for once the last one has arrived, so a slow phone
// link gets fewer pictures rather than a queue of them.
async function nextSnapshot() {
  const asked = Date.now();
  let wait = SNAPSHOT_INTERVAL;
  try {
    const r = await fetch("/snapshot.jpg?size=stream", { cache: "no-store" });
    if (!streaming || viewMode() !== "snapshots") return;
    if (r.ok) {
      const previous = snapshotUrl;
      snapshotUrl = URL.createObjectURL(await r.blob());
      live.src = snapshotUrl;
      if (previous) URL.revokeObjectURL(previous);
      live.dataset.snapshots = String(Number(live.dataset.snapshots || 0) + 1);
      wait = Math.max(0, SNAPSHOT_INTERVAL - (Date.now() - asked));
    } else wait = 1000;
  } catch (e) { wait = 1000; }
  if (streaming) snapshotTimer = setTimeout(nextSnapshot, wait);
}

// An MJPEG <img> fires "load" with its first frame: from then on the picture is live.
live.addEventListener("load", () => { if (streaming) live.dataset.loaded = "true"; });

// The stream ends when the camera goes off or errors; if it should be on, reconnect shortly.
live.addEventListener("error", () => {
  if (!streaming || viewMode() !== "mjpeg") return;
  retryStream();
});

function renderCamera(status) {
  current = { on: status.on, state: status.state, error: status.error || null };
  document.body.dataset.state = status.state;
  document.body.dataset.on = String(status.on);
  stateText.textContent = status.state;
  toggle.textContent = status.on ? "Turn off" : "Turn on";
  toggle.setAttribute("aria-pressed", String(status.on));
  errorText.hidden = !status.error;
  errorText.textContent = status.error ? "Camera problem: " + status.error : "";
  if (!shown) stopStream("Paused while the page is hidden.");
  else if (status.state === "on") startStream();
  else if (status.state === "off") stopStream("The camera is off.");
  else if (status.state === "starting") stopStream("The camera is starting…");
  else if (status.state === "stopping") stopStream("The camera is stopping…");
  else if (status.state === "error") stopStream("The camera is not delivering pictures; retrying…");
}

function renderMotion(active) {
  motion.dataset.active = String(active);
  motion.textContent = active ? "Motion" : "No motion";
}

// --- alerts: the armed state and why, each notification target's last result, a test ----------------
function renderArming(a) {
  if (!a) return;
  const button = $("arm-toggle");
  button.setAttribute("aria-pressed", String(a.armed));
  button.textContent = a.armed ? "Disarm" : "Arm";
  button.dataset.armed = String(a.armed);
  let text = (a.armed ? "Armed" : "Disarmed") + " (" + a.reason + ")";
  if (a.until && a.reason === "schedule") text += ", changes at " + new Date(a.until * 1000).toLocaleString();
  $("arm-state").textContent = text;
}
function renderNotify(n) {
  if (!n) return;
  $("notify-none").hidden = n.enabled;
  $("notify-row").hidden = !n.enabled;
  const list = $("notify-targets");
  list.replaceChildren(...(n.targets || []).map((t) => {
    const li = document.createElement("li");
    li.dataset.name = t.name;
    const last = t.last ? (t.last.ok ? "last sent " : "last failed ") + new Date(t.last.at * 1000).toLocaleTimeString()
      + (t.last.error ? ": " + t.last.error : "") : "nothing sent yet";
    li.textContent = t.name + " — " + last + " (" + t.sent + " sent, " + t.failed + " failed"
      + (t.held ? ", " + t.held + " summed up" : "") + (t.dropped ? ", " + t.dropped + " dropped" : "") + ")";
    li.dataset.ok = t.last ? String(t.last.ok) : "";
    return li;
  }));
}
$("arm-toggle").addEventListener("click", async () => {
  const armed = $("arm-toggle").dataset.armed !== "true";
  try {
    const r = await fetch("/api/arming", { method: "PUT", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify({ armed }) });
    if (r.ok) renderArming(await r.json());
  } catch (e) { /* the next status shows the truth */ }
});
$("notify-test").addEventListener("click", async () => {
  const answer = $("notify-answer");
  try {
    const r = await fetch("/api/notify/test", { method: "POST" });
    const body = await r.json();
    answer.textContent = r.ok ? "Sent to " + body.queued.join(", ") + ": see each result above" : body.error;
  } catch (e) { answer.textContent = "The appliance did not answer"; }
});

function renderStats(s) {
  renderRecordingStatus(s.recording);
  $("fps").textContent = (s.fps || 0).toFixed(1);
  $("viewers").textContent = s.viewers ?? 0;
  if (s.rtsp && s.rtsp.enabled && $("rtsp-clients")) $("rtsp-clients").textContent = s.rtsp.clients ?? 0;
  if (s.motion) renderMotion(s.motion.active);
  renderDetection(s.detection);
  renderArming(s.arming);
  renderNotify(s.notify);
}

function formatTime(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleString() : "…";
}

// --- clips: a click on an event plays its clip in place of its thumbnail ---------------------------
function eventUrl(ev, tail) { return "/api/events/" + encodeURIComponent(ev.id) + tail; }

function stopClip(li) {
  if (!li || li.dataset.playing !== "true") return;
  clearTimeout(li.clipTimer);
  li.dataset.playing = "false";
  const video = li.querySelector("video");
  if (video) { video.pause(); video.removeAttribute("src"); video.load(); video.remove(); }
  const img = li.querySelector("img");
  img.hidden = false;
  if (li.dataset.snapshot === "true") img.src = li.dataset.thumbnail;
  else img.removeAttribute("src");
}

function stopAllClips() { eventsList.querySelectorAll('li[data-playing="true"]').forEach(stopClip); }

function playClip(li, ev) {
  if (li.dataset.playing === "true") { stopClip(li); return; }
  stopAllClips();  // one replay at a time: each holds a connection
  li.dataset.playing = "true";
  li.dataset.clipFrame = "0";
  if (ev.clip.format === "mp4") { playVideo(li, ev); return; }
  if (viewMode() === "snapshots") { playFrames(li, ev); return; }
  li.querySelector("img").src = eventUrl(ev, "/clip.mjpg") + "?t=" + Date.now();
  // The <img> keeps the last picture when the replay ends: show the thumbnail again after it.
  li.clipTimer = setTimeout(() => stopClip(li), (ev.clip.seconds + 1.5) * 1000);
}

// An MP4 clip plays in a <video> in place of the thumbnail, on every browser and phone; the player
// seeks with range requests. It goes back to the thumbnail when it ends or on a second click.
function playVideo(li, ev) {
  const img = li.querySelector("img");
  const video = document.createElement("video");
  video.className = "clip-video";
  video.controls = true;
  video.muted = true;  // there is no sound; muted lets every browser start it at once
  video.playsInline = true;
  video.autoplay = true;
  video.preload = "auto";
  video.src = eventUrl(ev, "/clip.mp4") + (ev.clip.recording ? "?t=" + Date.now() : "");
  video.addEventListener("ended", () => { li.clipTimer = setTimeout(() => stopClip(li), 1500); });
  video.addEventListener("error", () => stopClip(li));
  img.hidden = true;
  img.after(video);
}

// Where MJPEG does not play (iOS WebKit), the clip's frames are shown one by one at their times; a
// frame that arrives late makes the ones already due be skipped, so the clip keeps its length.
async function playFrames(li, ev) {
  const img = li.querySelector("img");
  let clip;
  try {
    const r = await fetch(eventUrl(ev, "/clip.json"));
    if (!r.ok) throw new Error(r.status);
    clip = await r.json();
  } catch (e) { stopClip(li); return; }
  const started = performance.now();
  const show = (number) => {
    if (li.dataset.playing !== "true") return;
    const next = new Image();
    next.onload = () => {
      if (li.dataset.playing !== "true") return;
      img.src = next.src;
      li.dataset.clipFrame = String(number + 1);
      const elapsed = (performance.now() - started) / 1000;
      let following = number + 1;
      while (following < clip.frames - 1 && clip.times[following + 1] <= elapsed) following += 1;
      if (following >= clip.frames) { li.clipTimer = setTimeout(() => stopClip(li), 1500); return; }
      li.clipTimer = setTimeout(() => show(following), Math.max(0, (clip.times[following] - elapsed) * 1000));
    };
    next.onerror = () => stopClip(li);
    next.src = eventUrl(ev, "/clip/" + number + ".jpg");
  };
  if (clip.frames > 0) show(0); else stopClip(li);
}

function eventItem(ev) {
  const li = document.createElement("li");
  li.dataset.id = ev.id;
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = (ev.kind === "snapshot" ? "Snapshot at " : "Motion at ") + formatTime(ev.started_at);
  li.dataset.thumbnail = eventUrl(ev, "/snapshot.jpg");
  li.dataset.snapshot = String(ev.has_snapshot !== false);
  if (ev.has_snapshot !== false) img.src = li.dataset.thumbnail;
  const clip = ev.clip && ev.clip.frames > 0 ? ev.clip : null;
  li.dataset.clip = String(Boolean(clip));
  if (clip) {
    img.title = "Play the clip";
    img.tabIndex = 0;
    img.setAttribute("role", "button");
    img.addEventListener("click", () => playClip(li, ev));
    img.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") playClip(li, ev); });
  }
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
    const r = await fetch(eventUrl(ev, ""), { method: "DELETE" });
    if (r.ok || r.status === 404) li.remove();
    eventsEmpty.hidden = eventsList.children.length > 0;
  });
  if (clip) {
    const length = document.createElement("a");
    length.className = "clip";
    length.href = eventUrl(ev, "/clip");
    length.download = ev.id + (clip.format === "mp4" ? ".mp4" : ".avi");
    length.title = "Download the clip (" + clip.frames + " pictures" + (clip.recording ? ", still recording" : "") + ")";
    length.textContent = clip.recording ? "● recording" : "⬇ " + Math.round(clip.seconds) + " s clip";
    length.dataset.recording = String(Boolean(clip.recording));
    meta.append(when, length);
  } else meta.append(when);
  if (ev.footage) {  // its moment in the continuous recording
    const footage = document.createElement("a");
    footage.className = "footage";
    footage.href = "#recordings";
    footage.textContent = "⏵ recording";
    footage.title = "Play the continuous recording from this moment";
    footage.addEventListener("click", (e) => { e.preventDefault(); playRecording(ev.footage.url, ev.footage.offset, ev.started_at); });
    meta.append(footage);
  }
  if (ev.objects && ev.objects.length) {  // what detection saw: each object's best picture, its box drawn
    const found = document.createElement("div");
    found.className = "objects";
    for (const obj of ev.objects) {
      const link = document.createElement("a");
      link.href = eventUrl(ev, "/objects/" + obj.number + ".jpg");
      link.target = "_blank";
      link.title = obj.label + ", score " + Math.round(obj.score * 100) + " %";
      if (obj.has_snapshot) {
        const thumb = document.createElement("img");
        thumb.loading = "lazy";
        thumb.alt = obj.label;
        thumb.src = link.href;
        link.append(thumb);
      }
      link.append(obj.label + " " + Math.round(obj.score * 100) + "%");
      found.append(link);
    }
    meta.append(found);
  }
  li.dataset.labels = (ev.labels || []).join(",");
  meta.append(del);
  li.append(img, meta);
  return li;
}

// --- object labels: the history shows every event, or only those where a chosen label alerted ----
const labelSelect = $("events-label");
const wantedLabel = () => labelSelect.value;
function addLabelOptions(select, labels, text) {  // the labels it does not offer yet
  const have = [...select.options].map((o) => o.value);
  for (const label of labels || []) {
    if (have.includes(label)) continue;
    const option = document.createElement("option");
    option.value = label;
    option.textContent = text(label);
    select.append(option);
  }
}
function renderDetection(d) {
  const box = $("label-filter");
  if (!d || !d.enabled) { box.hidden = true; return; }
  box.hidden = false;
  addLabelOptions(labelSelect, d.labels, (label) => "with a " + label);
  const zoneLabel = $("zone-label");
  zoneLabel.hidden = false;
  addLabelOptions(zoneLabel, d.labels, (label) => "for " + label + "s only");
  const remembered = localStorage.getItem("eventsLabel") || "";
  if (remembered && labelSelect.value !== remembered && [...labelSelect.options].some((o) => o.value === remembered)) {
    labelSelect.value = remembered;
    loadEvents();
  }
}
labelSelect.addEventListener("change", () => {
  localStorage.setItem("eventsLabel", labelSelect.value);
  loadEvents();
});

function removeEvent(id) {
  const existing = eventsList.querySelector(`li[data-id="${CSS.escape(id)}"]`);
  if (existing) existing.remove();
  eventsEmpty.hidden = eventsList.children.length > 0;
}

function addEvent(ev) {
  if (wantedLabel() && !(ev.labels || []).includes(wantedLabel())) return;  // filtered out (for now)
  const existing = eventsList.querySelector(`li[data-id="${CSS.escape(ev.id)}"]`);
  if (existing && existing.dataset.playing === "true") return;  // the replay goes on; a click later sees the news
  if (existing) existing.replaceWith(eventItem(ev));
  else eventsList.prepend(eventItem(ev));
  while (eventsList.children.length > 24) eventsList.lastElementChild.remove();
  eventsEmpty.hidden = true;
  // Today's timeline gains the event (and the footage around it) a moment later.
  if (recSection && !recSection.hidden && recDay.value === dayValue(Date.now() / 1000)) {
    clearTimeout(recReloadTimer);
    recReloadTimer = setTimeout(loadRecordings, 2000);
  }
}

// A notification's link opens the page at its event: #event-<id>.
function showLinkedEvent() {
  if (!location.hash.startsWith("#event-")) return;
  const li = eventsList.querySelector(`li[data-id="${CSS.escape(location.hash.slice(7))}"]`);
  if (!li) return;
  li.dataset.linked = "true";
  li.scrollIntoView({ block: "center" });
}
window.addEventListener("hashchange", showLinkedEvent);

async function loadEvents() {
  try {
    const label = wantedLabel();
    const r = await fetch("/api/events?limit=24" + (label ? "&label=" + encodeURIComponent(label) : ""));
    if (!r.ok) return;
    const body = await r.json();
    eventsList.replaceChildren(...body.events.map(eventItem));
    eventsEmpty.textContent = label ? "No event with a " + label + " yet." : "No motion recorded yet.";
    eventsEmpty.hidden = body.events.length > 0;
    showLinkedEvent();
  } catch (e) { /* the list stays as it is; the next event adds itself */ }
}

async function refreshStatus() {
  try {
    const sent = performance.now();
    const r = await fetch("/api/status");
    if (!r.ok) return;
    const s = await r.json();
    if (!newerFromFeed("state", sent)) renderCamera(s.camera);
    renderStats(s);
  } catch (e) { stateText.textContent = "unreachable"; }
}

toggle.addEventListener("click", async () => {
  toggle.disabled = true;
  try {
    const sent = performance.now();
    const r = await fetch("/api/camera/toggle", { method: "POST" });
    const body = await r.json();
    if (r.ok && !newerFromFeed("state", sent)) renderCamera(body);
    else errorText.hidden = false, errorText.textContent = body.error || "Request failed";
  } catch (e) {
    errorText.hidden = false;
    errorText.textContent = "The appliance did not answer.";
  } finally {
    toggle.disabled = false;
  }
});

// --- the live feed, one per browser ---------------------------------------------------------------
// The visible tab holding the lease (in localStorage, renewed every 2 s) opens the feed and passes
// each message on; the others listen. A lease, not the Web Locks API: that needs HTTPS, and the
// appliance is usually reached over plain HTTP. Two tabs may both hold the feed for a moment; the
// next renewal settles it. Without BroadcastChannel every tab opens its own feed.
const FEED_KINDS = ["state", "status", "motion", "motion_settings", "picture"];
const LEASE_KEY = "appliance.feed-lease";
const tabId = Math.random().toString(36).slice(2);
const channel = "BroadcastChannel" in window ? new BroadcastChannel("appliance-live-feed") : null;
let source = null;
let pollTimer = null;
let leaseTimer = null;
let lastNews = Date.now();

// When the feed last brought each kind of news: an answer to a request sent before that is older
// than what the page shows, and is not shown (responses and feed messages may arrive in any order).
const feedAt = {};
const newerFromFeed = (kind, sent) => (feedAt[kind] || 0) > sent;

function handleFeed(kind, data) {
  lastNews = Date.now();
  feedAt[kind] = performance.now();
  if (kind === "state") renderCamera(data);
  else if (kind === "status") renderStats(data);
  else if (kind === "motion_settings") renderMotionSettings(data);
  else if (kind === "picture") renderPicture({ ...pictureSettings, ...data });
  else if (kind === "motion") {
    if (data.kind === "start" || data.kind === "end") renderMotion(data.kind === "start");
    if (data.kind === "deleted") removeEvent(data.event.id);  // motion without a wanted object, not kept
    else addEvent(data.event);
  }
}

function startPolling() {
  if (!pollTimer) pollTimer = setInterval(refreshStatus, 2000);
}

function openFeed() {
  if (source || !shown) return;
  if (!window.EventSource) { startPolling(); return; }
  source = new EventSource("/api/events/live");
  document.body.dataset.feed = "own";
  for (const kind of FEED_KINDS) {
    source.addEventListener(kind, (e) => {
      const data = JSON.parse(e.data);
      handleFeed(kind, data);
      if (channel) channel.postMessage({ kind, data });
    });
  }
  source.addEventListener("open", () => {
    // What changed before the feed was open never comes through it: read it now.
    clearInterval(pollTimer); pollTimer = null;
    refreshStatus(); loadMotion(); loadPicture();
  });
  source.addEventListener("error", () => {
    // EventSource reconnects by itself; poll meanwhile so the page never goes stale.
    startPolling();
  });
}

function closeFeed() {
  if (source) source.close();
  source = null;
  clearInterval(pollTimer);
  pollTimer = null;
  document.body.dataset.feed = channel ? "shared" : "none";
}

function readLease() {
  try {
    const lease = JSON.parse(localStorage.getItem(LEASE_KEY));
    return lease && lease.until > Date.now() ? lease.id : null;
  } catch (e) { return undefined; }  // no storage: no sharing
}

function tendLease() {
  if (!shown) return;
  const holder = readLease();
  if (holder === undefined || holder === null || holder === tabId) {
    try { localStorage.setItem(LEASE_KEY, JSON.stringify({ id: tabId, until: Date.now() + 5000 })); } catch (e) { /* own feed */ }
    openFeed();
  } else {
    closeFeed();
    // The tab holding the feed went quiet (hung, or its feed is down): ask for the state ourselves.
    if (Date.now() - lastNews > 6000) refreshStatus();
  }
}

function connectEvents() {
  if (!shown) return;
  if (!channel) { openFeed(); return; }
  tendLease();
  clearInterval(leaseTimer);
  leaseTimer = setInterval(tendLease, 2000);
}

function disconnectEvents() {
  clearInterval(leaseTimer);
  leaseTimer = null;
  if (source && readLease() === tabId) {
    try { localStorage.removeItem(LEASE_KEY); } catch (e) { /* it runs out by itself */ }
  }
  closeFeed();
}

if (channel) channel.addEventListener("message", (e) => { if (!source) handleFeed(e.data.kind, e.data.data); });
// Another tab gave the feed up (hidden or closed): take it over now rather than at the next renewal.
window.addEventListener("storage", (e) => { if (e.key === LEASE_KEY && shown && channel) tendLease(); });

// --- a hidden tab costs nothing ----------------------------------------------------------------------
function pageShown(visible) {
  if (visible === shown) return;
  shown = visible;
  document.body.dataset.shown = String(shown);
  if (!shown) {
    disconnectEvents();
    stopAllClips();
    stopStream("Paused while the page is hidden.");
  } else {
    connectEvents();
    refreshStatus();
    renderCamera({ on: current.on, state: current.state, error: current.error || null });
  }
}
document.addEventListener("visibilitychange", () => pageShown(document.visibilityState !== "hidden"));
window.addEventListener("pagehide", () => disconnectEvents());
window.addEventListener("pageshow", (e) => { if (e.persisted) { shown = false; pageShown(true); } });

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
    : "Zones: " + m.zones.map((z) => z.name + " (" + (z.mode === "include" ? "watched" : "ignored")
        + (z.labels && z.labels.length ? ", for " + z.labels.join(", ") : "") + ")").join(", ");
  document.body.dataset.zones = String(m.zones.length);
}

// Settings a user changes (motion, picture): a PUT shows what the appliance kept, or why it refused.
async function putSettings(url, body, render, errorText, kind) {
  errorText.hidden = true;
  try {
    const sent = performance.now();
    const r = await fetch(url, { method: "PUT", headers: { "Content-Type": "application/json" },
                                 body: JSON.stringify(body) });
    const answer = await r.json();
    if (r.ok) { if (!newerFromFeed(kind, sent)) render(answer); }
    else { errorText.hidden = false; errorText.textContent = answer.error || "Request failed"; }
  } catch (e) {
    errorText.hidden = false;
    errorText.textContent = "The appliance did not answer.";
  }
}

async function loadSettings(url, render, kind) {
  try {
    const sent = performance.now();
    const r = await fetch(url);
    if (r.ok) { const answer = await r.json(); if (!newerFromFeed(kind, sent)) render(answer); }
  } catch (e) { /* shown as it was; the live feed brings changes */ }
}

const putMotion = (body) => putSettings("/api/motion", body, renderMotionSettings, motionError, "motion_settings");
const loadMotion = () => loadSettings("/api/motion", renderMotionSettings, "motion_settings");

// Where the picture really is inside the <img> or <video> box (object-fit: contain leaves bars).
function pictureRect() {
  const shownPicture = video.hidden ? live : video;
  const box = shownPicture.getBoundingClientRect();
  const w = (video.hidden ? live.naturalWidth : video.videoWidth) || box.width;
  const h = (video.hidden ? live.naturalHeight : video.videoHeight) || box.height;
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

let drawTarget = "zone";  // what the polygon being drawn becomes: a motion zone or a privacy mask

function setDrawing(on, target = "zone") {
  draft = on ? [] : null;
  drawTarget = target;
  zoneDraft.dataset.target = target;
  zoneHelp.textContent = target === "mask"
    ? "Click the picture to place the corners of the area to black out (three or more), then save."
    : "Click the picture to place the corners of the area (three or more), then save.";
  document.body.dataset.drawing = String(on);
  zoneDraw.hidden = on;
  $("mask-draw").hidden = on;
  zoneSave.hidden = zoneCancel.hidden = zoneHelp.hidden = !on;
  renderDraft();
}

for (const picture of [live, video]) {
  picture.addEventListener("click", (e) => {
    if (draft === null) return;
    const pic = pictureRect();
    const clamp = (v) => Math.min(1, Math.max(0, Math.round(v * 1000) / 1000));
    draft.push([clamp((e.clientX - pic.left) / pic.width), clamp((e.clientY - pic.top) / pic.height)]);
    renderDraft();
  });
}
zoneDraw.addEventListener("click", () => setDrawing(true));
zoneCancel.addEventListener("click", () => setDrawing(false));
zoneSave.addEventListener("click", async () => {
  const points = draft, target = drawTarget;
  setDrawing(false);
  if (target === "mask") {
    const mask = { name: "mask " + (pictureSettings.masks.length + 1), points };
    await putPicture({ masks: [...pictureSettings.masks, mask] });
  } else {
    const label = $("zone-label").value;  // object detection: the zone is about this label only
    const zone = { name: "zone " + (motionSettings.zones.length + 1), mode: zoneMode.value, points,
                   labels: label ? [label] : [] };
    await putMotion({ zones: [...motionSettings.zones, zone] });
  }
});
zonesClear.addEventListener("click", () => putMotion({ zones: [] }));
motionEnabled.addEventListener("change", () => putMotion({ enabled: motionEnabled.checked }));
sensitivity.addEventListener("change", () => putMotion({ sensitivity: sensitivity.value }));

// --- the picture: controls the camera offers, night mode, privacy masks ----------------------------
const pictureControls = $("picture-controls");
const nightMode = $("night-mode");
const nightActive = $("night-active");
const masksText = $("masks-text");
const masksClear = $("masks-clear");
const pictureError = $("picture-error");
let pictureSettings = { controls: {}, offered: {}, night_mode: "off", night_active: false, masks: [] };
let offeredShown = "";

function controlInput(name, control) {
  const label = document.createElement("label");
  label.textContent = name.replace(/_/g, " ") + " ";
  let input;
  if (control.kind === "choice") {
    input = document.createElement("select");
    for (const choice of control.choices) {
      const option = document.createElement("option");
      option.value = option.textContent = choice;
      input.append(option);
    }
  } else {
    input = document.createElement("input");
    input.type = "range";
    input.min = control.minimum; input.max = control.maximum; input.step = control.step || "any";
  }
  input.id = "control-" + name;
  input.dataset.control = name;
  input.addEventListener("change", () => {
    const value = control.kind === "choice" ? input.value : Number(input.value);
    putPicture({ controls: { [name]: value } });
  });
  const shown = document.createElement("output");
  shown.id = "control-" + name + "-value";
  label.append(input, shown);
  return label;
}

function renderPicture(p) {
  pictureSettings = p;
  const offered = JSON.stringify(p.offered);
  if (offered !== offeredShown) {  // rebuilt only when the camera's offer changes, not on each value
    offeredShown = offered;
    pictureControls.replaceChildren(...Object.entries(p.offered).map(([name, c]) => controlInput(name, c)));
    if (Object.keys(p.offered).length === 0) pictureControls.textContent = "This camera offers no picture controls.";
  }
  for (const [name, control] of Object.entries(p.offered)) {
    const value = name in p.controls ? p.controls[name] : control.default;
    const input = $("control-" + name), shown = $("control-" + name + "-value");
    if (input && document.activeElement !== input) input.value = value;
    if (shown) shown.textContent = String(value) + (control.unit ? " " + control.unit.split(",")[0] : "");
  }
  nightMode.value = p.night_mode;
  nightActive.textContent = p.night_active ? "night mode is on" : "";
  masksClear.disabled = p.masks.length === 0;
  masksText.textContent = p.masks.length === 0 ? "No privacy masks: the whole picture is shown and stored."
    : "Privacy masks: " + p.masks.map((m) => m.name + " (blacked out)").join(", ");
  document.body.dataset.masks = String(p.masks.length);
}

const putPicture = (body) => putSettings("/api/camera/settings", body, renderPicture, pictureError, "picture");
const loadPicture = () => loadSettings("/api/camera/settings", renderPicture, "picture");

nightMode.addEventListener("change", () => putPicture({ night_mode: nightMode.value }));
$("mask-draw").addEventListener("click", () => setDrawing(true, "mask"));
masksClear.addEventListener("click", () => putPicture({ masks: [] }));

document.body.dataset.shown = String(shown);
renderMode();
renderCamera({ on: current.on, state: current.state, error: null });
refreshStatus();
loadEvents();
loadMotion();
loadPicture();
connectEvents();

// --- RTSP: the stream's address as this browser reaches the appliance, to copy into a recorder -----
(function rtspAddress() {
  const box = $("rtsp");
  if (!box || !box.dataset.port) return;
  const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
  const url = `rtsp://${host}:${box.dataset.port}${box.dataset.path}`;
  $("rtsp-url").textContent = url;
  $("rtsp-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(url);  // only on https or localhost
      $("rtsp-copy").textContent = "Copied";
    } catch {
      getSelection().selectAllChildren($("rtsp-url"));  // elsewhere: selected, for Ctrl+C
      $("rtsp-copy").textContent = "Selected: press Ctrl+C";
    }
  });
})();

// --- recordings: a day's continuous footage on a timeline, events marked on it, timelapses -------

function localDayStart(value) {  // "2026-12-06" -> epoch seconds of that local midnight
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d).getTime() / 1000;
}

function dayValue(epoch) {
  const d = new Date(epoch * 1000);
  return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0");
}

function renderRecordingStatus(rec) {
  if (!recSection) return;
  const on = Boolean(rec && ((rec.continuous && rec.continuous.enabled) || (rec.timelapse && rec.timelapse.enabled)));
  const wasHidden = recSection.hidden;
  recSection.hidden = !on;
  recFault.hidden = !(rec && rec.fault);
  recFault.textContent = rec && rec.fault ? "Recording fault: " + rec.fault : "";
  if (on && wasHidden) loadRecordings();
}

async function loadRecordings() {
  if (!recDay.value) recDay.value = dayValue(Date.now() / 1000);
  const start = localDayStart(recDay.value);
  const end = start + 86400;
  let body;
  try {
    const r = await fetch("/api/recordings?start=" + start + "&end=" + end);
    if (!r.ok) return;
    body = await r.json();
  } catch (e) { return; }
  recLoadedDay = recDay.value;
  recSegments = body.continuous;
  const place = (el, from, to) => {
    el.style.left = (Math.max(0, from - start) / 864) + "%";
    el.style.width = Math.max(0.15, (Math.min(end, to) - Math.max(start, from)) / 864) + "%";
  };
  const parts = body.continuous.map((seg) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "segment";
    b.title = new Date(seg.start * 1000).toLocaleTimeString() + " · " + Math.round(seg.seconds) + " s";
    place(b, seg.start, seg.start + seg.seconds);
    b.addEventListener("click", () => playRecording(seg.url, 0, seg.start));
    return b;
  });
  const marks = body.events.filter((ev) => ev.kind === "motion").map((ev) => {
    const m = document.createElement("button");
    m.type = "button";
    m.className = "event-mark";
    const seen = ev.labels && ev.labels.length ? ev.labels.join(", ") : "Motion";
    m.title = seen.charAt(0).toUpperCase() + seen.slice(1) + " at " + new Date(ev.start * 1000).toLocaleTimeString();
    if (ev.labels && ev.labels.length) m.dataset.alert = "true";
    place(m, ev.start, (ev.end || ev.start) + 1);
    m.addEventListener("click", () => {
      const seg = recSegments.find((s) => s.start <= ev.start && ev.start < s.start + s.seconds);
      if (seg) playRecording(seg.url, ev.start - seg.start, seg.start);
    });
    return m;
  });
  recTimeline.replaceChildren(...parts, ...marks);
  $("rec-empty").hidden = body.continuous.length > 0;
  const list = $("rec-timelapses");
  list.replaceChildren(...body.timelapse.map((t) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = t.url;
    a.textContent = "Timelapse from " + formatTime(t.start) + " (" + Math.round(t.seconds) + " s)";
    a.addEventListener("click", (e) => { e.preventDefault(); playRecording(t.url, 0, null); });
    li.append(a);
    return li;
  }));
}

// Plays one file from ``offset`` s; at its end the next segment of the day follows on.
function playRecording(url, offset, startedAt) {
  if (recSection.hidden) return;
  if (startedAt && dayValue(startedAt) !== recLoadedDay) { recDay.value = dayValue(startedAt); loadRecordings(); }
  recPlayer.hidden = false;
  recPlayer.dataset.url = url;
  recNow.textContent = startedAt ? "From " + formatTime(startedAt + offset) : "";
  recPlayer.src = url;
  recPlayer.addEventListener("loadedmetadata", () => {
    if (offset > 0) recPlayer.currentTime = Math.min(offset, Math.max(0, recPlayer.duration - 0.1));
    recPlayer.play().catch(() => {});
  }, { once: true });
  recSection.scrollIntoView({ behavior: "smooth", block: "nearest" });
}

if (recPlayer) {
  recPlayer.addEventListener("ended", () => {
    const at = recSegments.findIndex((s) => s.url === recPlayer.dataset.url);
    const next = at >= 0 ? recSegments[at + 1] : null;
    if (next && next.start - (recSegments[at].start + recSegments[at].seconds) < 2) playRecording(next.url, 0, next.start);
  });
  recDay.addEventListener("change", loadRecordings);
  $("rec-refresh").addEventListener("click", loadRecordings);
}
