// cliplive's web page: the browser camera over WebRTC with a live score plot, the streams, the stored highlights.
"use strict";

const $ = (selector) => document.querySelector(selector);
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
const WINDOW_S = 60; // seconds of scores and highlights on the plot
const ICE_GATHERING_MS = 5000;

const state = {
  token: sessionStorage.getItem("cliplive-token") || "",
  pc: null, media: null, session: null, stream: null,
  queries: [], scores: [], // scores: {t, relevance[]} of the camera stream, oldest first
  live: new Map(), // highlight id -> its newest event
  thumbs: new Map(), // thumbnail URL + best frame -> object URL (images need the token, so they are fetched)
  clock: null, // {media, wall}: the first scores message's media time and arrival time
  editing: null, // the stream whose sentences are being edited
  filter: null, highlights: new Map(), exhausted: false, // stored highlights shown, by id
  cutting: new Set(), clipErrors: new Map(), // highlight ids whose clip is being fetched; their errors
};

// --- API -------------------------------------------------------------------------------------------

const TOKEN_HELP = "Tokens are made on the server with `cliplive token add --role viewer` (or `--role admin`); " +
  "the first admin token was printed when the server first started (`token` in the config file's [server] table is one too).";

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

function detailText(detail) {
  // FastAPI's `detail`: a message, or (422) a list of {loc, msg} for what the request got wrong.
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => {
      const where = (d.loc || []).filter((part) => part !== "body").join(".");
      return where ? `${where}: ${d.msg}` : d.msg;
    }).join("; ");
  }
  return JSON.stringify(detail);
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    $("#token-form").hidden = false;
    throw new ApiError(state.token
      ? `The token was refused: enter the right one at the top right. ${TOKEN_HELP}`
      : `A token is needed: this server asks for an API token; enter it at the top right. ${TOKEN_HELP}`, 401);
  }
  if (!response.ok) {
    let detail = response.statusText || `HTTP ${response.status}`;
    try { detail = detailText((await response.json()).detail); } catch { /* not JSON */ }
    throw new ApiError(detail, response.status);
  }
  return response;
}

function showError(error) {
  $("#error").textContent = error.message || String(error);
  $("#error").dataset.status = error.status || "";
  $("#error").hidden = false;
}

function clearError() { $("#error").hidden = true; }

function setFormError(element, error) {
  element.textContent = error ? error.message || String(error) : "";
  element.hidden = !error;
}

$("#token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("cliplive-token", state.token); // /docs (same origin) reads it too
  $("#token-form").hidden = true;
  clearError();
  refresh();
});

function jsonBody(method, body) {
  return { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

function lines(text) { return text.split("\n").map((s) => s.trim()).filter(Boolean); }

// --- camera over WebRTC ----------------------------------------------------------------------------

function iceGatheringComplete(pc) {
  // The server (aiortc) takes no trickled candidates: the offer must carry them all.
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, ICE_GATHERING_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

async function startCamera(event) {
  event.preventDefault();
  const sentences = lines($("#sentences").value);
  if (!sentences.length) return showError(new Error("type at least one sentence"));
  clearError();
  $("#start").disabled = true;
  setCameraStatus("Starting the camera…");
  try {
    state.media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: false });
    $("#preview").srcObject = state.media;
    const pc = (state.pc = new RTCPeerConnection({ iceServers: [] }));
    const channel = pc.createDataChannel("events");
    channel.onmessage = (message) => onEvent(JSON.parse(message.data));
    for (const track of state.media.getVideoTracks()) pc.addTransceiver(track, { direction: "sendonly" });
    pc.onconnectionstatechange = () => {
      setCameraStatus(`Connection ${pc.connectionState}.`);
      if (["failed", "closed"].includes(pc.connectionState)) stopCamera();
    };
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    const body = { sdp: pc.localDescription.sdp, type: "offer", sentences, fps: Number($("#fps").value) || 2 };
    if ($("#name").value.trim()) body.name = $("#name").value.trim();
    const answer = await (await api("/api/webrtc/offer", jsonBody("POST", body))).json();
    Object.assign(state, { session: answer.session, stream: answer.stream, queries: sentences, scores: [], clock: null });
    state.live.clear();
    renderLegend();
    renderLive();
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    setCameraStatus(`Sending to stream ${answer.stream}…`);
    $("#stop").disabled = false;
    refreshStreams();
  } catch (error) {
    showError(error);
    stopCamera();
  }
}

function stopCamera() {
  if (state.session) {
    api(`/api/webrtc/${state.session}`, { method: "DELETE" }).catch(() => {}).then(settleLive); // may be gone already
  }
  if (state.pc) state.pc.close();
  if (state.media) state.media.getTracks().forEach((track) => track.stop());
  Object.assign(state, { pc: null, media: null, session: null });
  $("#preview").srcObject = null;
  $("#start").disabled = false;
  $("#stop").disabled = true;
  setCameraStatus(state.stream ? `Stopped; stream ${state.stream}'s highlights are kept.` : "Camera off.");
  setTimeout(refresh, 1000); // its open highlights end on the server
}

async function settleLive() {
  // `end` events sent while the connection closed can be lost: take the open highlights' final state from the store.
  for (const [id, h] of state.live) {
    if (h.type === "end") continue;
    const stored = await (await api(`/api/highlights/${id}`)).json();
    state.live.set(id, { ...h, ...stored, highlight_id: id, type: stored.state === "open" ? "update" : "end" });
  }
  renderLive();
  drawPlot();
}

function setCameraStatus(text) { $("#camera-status").textContent = text; }

function probability(logit) { return 1 / (1 + Math.exp(-logit)); } // as the segmenter scores (stream/segmenter.py)

function wallTime(event) {
  // Unix seconds of a frame at media time `t`: the message's own wall time if it has one, else the first
  // frame's arrival time plus the media time since it.
  if (typeof event.wall === "number") return event.wall;
  if (!state.clock) state.clock = { media: event.t, wall: Date.now() / 1000 };
  return state.clock.wall + (event.t - state.clock.media);
}

function mediaToWall(t) { return state.clock ? state.clock.wall + (t - state.clock.media) : null; }

function onEvent(event) {
  if (event.kind === "scores") {
    const wall = wallTime(event);
    state.scores.push({ wall, p: event.relevance.map(probability) });
    while (state.scores.length && state.scores[0].wall < wall - WINDOW_S) state.scores.shift();
    drawPlot();
  } else if (event.kind === "highlight") {
    state.live.set(event.highlight_id, event);
    renderLive();
    drawPlot();
    if (event.type === "end") refreshHighlights();
  } else if (event.kind === "status") {
    setCameraStatus(`Stream ${event.stream}: ${event.state}${event.detail && event.detail.error ? ` (${event.detail.error})` : ""}.`);
  }
}

$("#start-form").addEventListener("submit", startCamera);
$("#stop").addEventListener("click", stopCamera);

// --- plot: per-sentence probabilities (top) and highlight bars (bottom rows) on one clock-time axis ---

const THRESHOLD = 0.5; // the segmenter opens on each sentence's own normalised score, not a fixed probability

function color(index) { return COLORS[index % COLORS.length]; }

function renderLegend() {
  $("#legend").replaceChildren(...state.queries.map((query, i) => {
    const item = document.createElement("li");
    item.style.setProperty("--color", color(i));
    item.textContent = query;
    return item;
  }));
}

function clock(unix, seconds = true) {
  return new Date(unix * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: seconds ? "2-digit" : undefined });
}

function drawPlot() {
  const canvas = $("#plot");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const rowHeight = 14;
  const barsTop = height - 20 - rowHeight * Math.max(1, state.queries.length);
  const left = 44, right = width - 10, top = 10, bottom = barsTop - 12;
  const now = state.scores.length ? state.scores[state.scores.length - 1].wall : Date.now() / 1000;
  const t1 = Math.max(now, (state.scores.length ? state.scores[0].wall : now) + WINDOW_S), t0 = t1 - WINDOW_S;
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (right - left);
  const y = (p) => bottom - p * (bottom - top);

  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (let k = 0; k <= 4; k++) { // probability grid
    const p = k / 4;
    ctx.strokeStyle = "#e5e7eb";
    ctx.beginPath(); ctx.moveTo(left, y(p)); ctx.lineTo(right, y(p)); ctx.stroke();
    ctx.fillStyle = "#6b7280";
    ctx.fillText(`${Math.round(p * 100)}%`, 8, y(p) + 4);
  }
  for (let t = Math.ceil(t0 / 10) * 10; t <= t1; t += 10) { // clock-time grid, every 10 s
    ctx.strokeStyle = "#e5e7eb";
    ctx.beginPath(); ctx.moveTo(x(t), top); ctx.lineTo(x(t), height - 18); ctx.stroke();
    ctx.fillStyle = "#6b7280";
    ctx.fillText(clock(t), x(t) - 22, height - 5);
  }
  ctx.save(); // the 0.5 line
  ctx.strokeStyle = "#9ca3af";
  ctx.setLineDash([5, 4]);
  ctx.beginPath(); ctx.moveTo(left, y(THRESHOLD)); ctx.lineTo(right, y(THRESHOLD)); ctx.stroke();
  ctx.restore();
  ctx.fillStyle = "#4b5563";
  ctx.fillText("p = 0.5", right - 44, y(THRESHOLD) - 4);
  if (!state.scores.length) {
    ctx.fillStyle = "#6b7280";
    ctx.fillText(state.session ? "Waiting for the first scores…" : "Start the camera to see live scores.", left + 10, top + 20);
  }
  ctx.lineWidth = 2;
  state.queries.forEach((_, i) => {
    ctx.strokeStyle = color(i);
    ctx.beginPath();
    state.scores.forEach((s, k) => (k ? ctx.lineTo : ctx.moveTo).call(ctx, x(s.wall), y(s.p[i])));
    ctx.stroke();
  });
  for (const h of state.live.values()) { // one row per sentence; an open highlight runs to now
    const row = barsTop + h.query_index * rowHeight;
    const hStart = mediaToWall(h.start) ?? h.wall_start;
    const hEnd = h.end === null ? now : (mediaToWall(h.end) ?? h.wall_end ?? now);
    if (hStart === undefined || hEnd < t0) continue;
    const start = Math.max(hStart, t0);
    ctx.fillStyle = color(h.query_index);
    ctx.globalAlpha = h.end === null ? 0.55 : 0.9;
    ctx.fillRect(x(start), row + 2, Math.max(3, x(hEnd) - x(start)), rowHeight - 4);
    ctx.globalAlpha = 1;
  }
}

function percent(score) { // a probability
  const p = score * 100;
  return p >= 9.95 ? `${Math.round(p)}%` : p >= 0.1 ? `${p.toFixed(1)}%` : "<0.1%";
}

function duration(seconds) {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
  return `${m} min ${s} s`;
}

function liveSpan(h) {
  const start = mediaToWall(h.start) ?? h.wall_start;
  if (start === undefined) return "";
  const end = h.end === null || h.end === undefined ? null : mediaToWall(h.end) ?? h.wall_end;
  return end === null || end === undefined ? `${clock(start)}–…` : `${clock(start)}–${clock(end)} (${duration(h.end - h.start)})`;
}

function renderLive() {
  const items = [...state.live.values()].reverse().map((h) => {
    const item = document.createElement("li");
    item.dataset.query = h.query;
    item.dataset.state = h.type === "end" ? "ended" : "open";
    item.style.setProperty("--color", color(h.query_index));
    const query = Object.assign(document.createElement("span"), { className: "query", textContent: h.query });
    item.append(query, ` ${liveSpan(h)}, score ${percent(h.score)} `);
    if (h.type !== "end") item.append(Object.assign(document.createElement("span"), { className: "open", textContent: "● open" }));
    return item;
  });
  if (!items.length) items.push(Object.assign(document.createElement("li"), { className: "muted empty", textContent: "None yet." }));
  $("#live-highlights").replaceChildren(...items);
}

// --- streams: list, add, edit sentences, delete ---------------------------------------------------

function cell(text, className = "") {
  return Object.assign(document.createElement("td"), { textContent: text, className });
}

function button(text, className = "small") {
  return Object.assign(document.createElement("button"), { type: "button", textContent: text, className });
}

function fpsText(s) {
  if (s.state === "ended") return "—"; // an average over a stream that stopped only shrinks
  const fps = s.metrics.sampled_fps ?? s.metrics.input_fps;
  return fps === null || fps === undefined ? "—" : fps.toFixed(1);
}

function streamRow(s) {
  const row = document.createElement("tr");
  row.dataset.stream = s.name;
  const stateCell = cell("");
  const error = s.last_status && s.last_status.detail && s.last_status.detail.error;
  stateCell.append(Object.assign(document.createElement("span"), {
    className: `state ${s.state || ""}`, textContent: s.state || "—", title: error || "",
  }));
  const actions = cell("", "actions");
  const edit = button("Edit"), remove = button("Delete", "small danger");
  edit.classList.add("edit", "admin-only");
  remove.classList.add("delete", "admin-only");
  edit.addEventListener("click", () => { state.editing = s.name; refreshStreams().catch(showError); });
  remove.addEventListener("click", () => deleteStream(s.name, remove));
  actions.append(edit, remove);
  const sentences = cell("", "sentences");
  if (state.editing === s.name) sentences.append(sentenceEditor(s));
  else sentences.textContent = s.sentences.join(" · ");
  row.append(cell(s.name), stateCell, cell(fpsText(s), "fps"), sentences, actions);
  return row;
}

function sentenceEditor(s) {
  const form = Object.assign(document.createElement("form"), { className: "editor" });
  const text = Object.assign(document.createElement("textarea"), { rows: Math.max(2, s.sentences.length + 1), value: s.sentences.join("\n") });
  text.setAttribute("aria-label", `sentences of ${s.name}, one per line`);
  const save = Object.assign(button("Save", "small primary"), { type: "submit" });
  const cancel = button("Cancel");
  const message = Object.assign(document.createElement("p"), { className: "form-error", hidden: true });
  message.setAttribute("role", "alert");
  cancel.addEventListener("click", () => { state.editing = null; refreshStreams().catch(showError); });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    save.disabled = true;
    try {
      await api(`/api/streams/${encodeURIComponent(s.name)}`, jsonBody("PATCH", { sentences: lines(text.value), images: s.images }));
      state.editing = null;
      await refreshStreams();
    } catch (error) {
      setFormError(message, error);
      save.disabled = false;
    }
  });
  form.append(text, Object.assign(document.createElement("div"), { className: "inline" }), message);
  form.children[1].append(save, cancel);
  return form;
}

async function deleteStream(name, control) {
  if (!confirm(`Delete stream ${name}? It stops; its highlights are kept.`)) return;
  control.disabled = true;
  try {
    await api(`/api/streams/${encodeURIComponent(name)}`, { method: "DELETE" });
    if (state.editing === name) state.editing = null;
    clearError();
  } catch (error) {
    showError(new Error(`Could not delete ${name}: ${error.message}`));
  }
  await refreshStreams().catch(showError);
}

$("#add-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = { name: $("#add-name").value.trim(), source: $("#add-source").value.trim(),
                 sentences: lines($("#add-sentences").value), fps: Number($("#add-fps").value) || 2 };
  $("#add-submit").disabled = true;
  setFormError($("#add-error"), null);
  try {
    await api("/api/streams", jsonBody("POST", body));
    $("#add-form").reset();
    await refreshStreams();
  } catch (error) {
    setFormError($("#add-error"), error);
  } finally {
    $("#add-submit").disabled = false;
  }
});

let streamsVersion = 0;

async function refreshStreams() {
  const version = ++streamsVersion;
  const streams = await (await api("/api/streams")).json();
  if (version !== streamsVersion) return; // a newer refresh is under way
  const editor = state.editing && document.querySelector(`#streams tr[data-stream="${CSS.escape(state.editing)}"] form.editor`);
  if (state.editing && !streams.some((s) => s.name === state.editing)) state.editing = null;
  const rows = streams.map((s) => {
    const row = streamRow(s);
    if (editor && s.name === state.editing) row.querySelector("td.sentences").replaceChildren(editor); // keep what is typed
    return row;
  });
  if (!rows.length) {
    const row = document.createElement("tr");
    row.append(Object.assign(cell("No streams. Start the camera, or add one below.", "muted"), { colSpan: 5 }));
    rows.push(row);
  }
  $("#streams tbody").replaceChildren(...rows);
  const filter = $("#stream-filter"), chosen = filter.value;
  const names = ["", ...new Set([...streams.map((s) => s.name), chosen].filter(Boolean))];
  filter.replaceChildren(...names.map((name) => new Option(name || "all", name, false, name === chosen)));
}

// --- stored highlights, newest first, a page at a time ---------------------------------------------

const PAGE = 24;

async function thumbnail(h) {
  const key = `${h.thumbnail_url}#${h.best_frame_ts}`;
  if (!state.thumbs.has(key)) {
    const blob = await (await api(h.thumbnail_url)).blob();
    state.thumbs.set(key, URL.createObjectURL(blob));
  }
  return state.thumbs.get(key);
}

function dateTime(unix) {
  return new Date(unix * 1000).toLocaleString([], { year: "numeric", month: "short", day: "numeric",
                                                     hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function when(h) {
  const start = dateTime(h.wall_start);
  if (h.wall_end === null || h.wall_end === undefined) return `${start} – (open)`;
  const sameDay = new Date(h.wall_start * 1000).toDateString() === new Date(h.wall_end * 1000).toDateString();
  return `${start} – ${sameDay ? clock(h.wall_end) : dateTime(h.wall_end)}`;
}

function highlightsQuery(before) {
  const stream = $("#stream-filter").value;
  return `/api/highlights?limit=${PAGE}${stream ? `&stream=${encodeURIComponent(stream)}` : ""}${before ? `&before=${before}` : ""}`;
}

async function refreshHighlights() {
  // The newest page, merged with the older pages already shown.
  const filter = $("#stream-filter").value;
  if (state.filter !== filter) Object.assign(state, { filter, highlights: new Map(), exhausted: false });
  const page = await (await api(highlightsQuery())).json();
  if (state.filter !== filter) return;
  if (!state.highlights.size) state.exhausted = page.length < PAGE;
  for (const h of page) state.highlights.set(h.id, h);
  await renderHighlights();
}

async function olderHighlights() {
  const oldest = Math.min(...state.highlights.keys());
  const filter = state.filter;
  $("#older").disabled = true;
  try {
    const page = await (await api(highlightsQuery(oldest))).json();
    if (state.filter !== filter) return;
    for (const h of page) state.highlights.set(h.id, h);
    state.exhausted = page.length < PAGE;
    await renderHighlights();
  } finally {
    $("#older").disabled = false;
  }
}

function card(h) {
  const article = Object.assign(document.createElement("article"), { className: "card" });
  article.dataset.query = h.query;
  article.dataset.id = h.id;
  article.dataset.state = h.state;
  let image;
  if (h.thumbnail_url) {
    image = Object.assign(document.createElement("img"), { className: "thumb", alt: "" });
    const key = `${h.thumbnail_url}#${h.best_frame_ts}`;
    if (state.thumbs.has(key)) image.src = state.thumbs.get(key); // no flicker when the cards are redrawn
    else thumbnail(h).then((url) => { image.src = url; image.alt = h.query; }).catch(() => {});
  } else {
    image = Object.assign(document.createElement("div"), { className: "thumb none", textContent: "no thumbnail" });
  }
  const body = Object.assign(document.createElement("div"), { className: "body" });
  const score = Object.assign(document.createElement("span"), { className: "score", textContent: percent(h.score),
                                                                 title: "peak probability of the highlight's frames" });
  const length = h.end === null ? "open" : duration(h.end - h.start);
  body.append(Object.assign(document.createElement("span"), { className: "query", textContent: h.query }),
    Object.assign(document.createElement("span"), { className: "meta", textContent: `${h.stream} · ${length}` }), score,
    Object.assign(document.createElement("span"), { className: "when", textContent: when(h) }));
  if (h.state === "interrupted") body.append(Object.assign(document.createElement("span"), { className: "muted", textContent: "interrupted" }));
  const cutting = state.cutting.has(h.id);
  const play = Object.assign(document.createElement("button"), { type: "button", className: "play",
    textContent: cutting ? "Cutting clip…" : h.clip_url ? "Play clip" : h.state === "open" ? "Clip when it ends" : "No clip" });
  play.disabled = !h.clip_url || cutting;
  if (cutting) play.prepend(Object.assign(document.createElement("span"), { className: "spinner" }));
  play.addEventListener("click", () => playClip(h));
  const message = Object.assign(document.createElement("p"), { className: "form-error clip-error", role: "alert",
                                                               textContent: state.clipErrors.get(h.id) || "" });
  message.hidden = !state.clipErrors.has(h.id);
  article.append(image, body, play, message);
  return article;
}

async function renderHighlights() {
  const ordered = [...state.highlights.values()].sort((a, b) => b.id - a.id);
  const cards = ordered.map(card);
  if (!cards.length) cards.push(Object.assign(document.createElement("p"), { className: "muted", textContent: "No highlights yet." }));
  $("#highlights").replaceChildren(...cards);
  $("#older").hidden = state.exhausted || !ordered.length;
}

async function playClip(h) {
  // A clip may be cut on demand, which takes seconds: the card shows it, and its button waits.
  state.cutting.add(h.id);
  state.clipErrors.delete(h.id);
  await renderHighlights();
  try {
    const blob = await (await api(h.clip_url)).blob(); // a few seconds of mp4: fetched whole, with the token
    const video = $("#clip");
    if (video.src) URL.revokeObjectURL(video.src);
    video.src = URL.createObjectURL(blob);
    $("#player-title").textContent = `${h.query} — ${h.stream}, ${when(h)}, score ${percent(h.score)}`;
    $("#player").showModal();
  } catch (error) {
    state.clipErrors.set(h.id, `Clip unavailable: ${error.message}`);
  } finally {
    state.cutting.delete(h.id);
    await renderHighlights();
  }
}

$("#player").addEventListener("close", () => $("#clip").pause());
$("#refresh").addEventListener("click", () => refresh());
$("#older").addEventListener("click", () => olderHighlights().catch(showError));
$("#stream-filter").addEventListener("change", () => refreshHighlights().catch(showError));

async function refreshRole() {
  // What the token may do: the page hides the controls of what it may not (.admin-only, style.css).
  const who = await (await api("/api/whoami")).json();
  document.body.dataset.role = who.role;
  $("#role").textContent = `read-only (viewer token${who.name ? ` “${who.name}”` : ""})`;
}

async function refresh() {
  try {
    await refreshRole();
    await Promise.all([refreshStreams(), refreshHighlights()]);
  } catch (error) {
    showError(error);
  }
}

renderLegend();
drawPlot();
refresh();
setInterval(() => refreshStreams().catch(() => {}), 3000);
setInterval(() => refreshHighlights().catch(() => {}), 5000);
