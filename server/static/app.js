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
};

// --- API -------------------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    $("#token-form").hidden = false;
    throw new Error("this server needs an API token: enter it at the top right");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = JSON.stringify((await response.json()).detail); } catch { /* not JSON */ }
    throw new Error(`${path}: ${response.status} ${detail}`);
  }
  return response;
}

function showError(error) {
  $("#error").textContent = error.message || String(error);
  $("#error").hidden = false;
}

function clearError() { $("#error").hidden = true; }

$("#token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("cliplive-token", state.token);
  $("#token-form").hidden = true;
  clearError();
  refresh();
});

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
  const sentences = $("#sentences").value.split("\n").map((s) => s.trim()).filter(Boolean);
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
    const answer = await (await api("/api/webrtc/offer", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    })).json();
    Object.assign(state, { session: answer.session, stream: answer.stream, queries: sentences, scores: [] });
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

function onEvent(event) {
  if (event.kind === "scores") {
    state.scores.push(event);
    const oldest = event.t - WINDOW_S;
    while (state.scores.length && state.scores[0].t < oldest) state.scores.shift();
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

// --- plot: per-sentence scores (top) and highlight bars (bottom rows) on one time axis ---------------

function color(index) { return COLORS[index % COLORS.length]; }

function renderLegend() {
  $("#legend").replaceChildren(...state.queries.map((query, i) => {
    const item = document.createElement("li");
    item.style.setProperty("--color", color(i));
    item.textContent = query;
    return item;
  }));
}

function drawPlot() {
  const canvas = $("#plot");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const rowHeight = 14;
  const barsTop = height - 20 - rowHeight * Math.max(1, state.queries.length);
  const left = 44, right = width - 10, top = 10, bottom = barsTop - 12;
  const now = state.scores.length ? state.scores[state.scores.length - 1].t : 0;
  const t0 = Math.max(0, now - WINDOW_S), t1 = Math.max(t0 + WINDOW_S, now);
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (right - left);
  const values = state.scores.flatMap((s) => s.relevance);
  let lo = Math.min(...values, 0), hi = Math.max(...values, 1);
  if (!values.length) [lo, hi] = [0, 1];
  const pad = (hi - lo) * 0.08;
  lo -= pad; hi += pad;
  const y = (v) => bottom - ((v - lo) / (hi - lo)) * (bottom - top);

  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#e5e7eb";
  ctx.fillStyle = "#6b7280";
  ctx.lineWidth = 1;
  for (let k = 0; k <= 4; k++) { // value grid
    const v = lo + ((hi - lo) * k) / 4;
    ctx.beginPath(); ctx.moveTo(left, y(v)); ctx.lineTo(right, y(v)); ctx.stroke();
    ctx.fillText(v.toFixed(1), 4, y(v) + 4);
  }
  for (let t = Math.ceil(t0 / 10) * 10; t <= t1; t += 10) { // time grid, every 10 s
    ctx.beginPath(); ctx.moveTo(x(t), top); ctx.lineTo(x(t), height - 18); ctx.stroke();
    ctx.fillText(`${t}s`, x(t) - 8, height - 5);
  }
  if (!state.scores.length) {
    ctx.fillText(state.session ? "Waiting for the first scores…" : "Start the camera to see live scores.", left + 10, top + 20);
  }
  ctx.lineWidth = 2;
  state.queries.forEach((_, i) => {
    ctx.strokeStyle = color(i);
    ctx.beginPath();
    state.scores.forEach((s, k) => (k ? ctx.lineTo : ctx.moveTo).call(ctx, x(s.t), y(s.relevance[i])));
    ctx.stroke();
  });
  for (const h of state.live.values()) { // one row per sentence; an open highlight runs to now
    const row = barsTop + h.query_index * rowHeight;
    const start = Math.max(h.start, t0), end = h.end === null ? now : h.end;
    if (end < t0) continue;
    ctx.fillStyle = color(h.query_index);
    ctx.globalAlpha = h.end === null ? 0.55 : 0.9;
    ctx.fillRect(x(start), row + 2, Math.max(3, x(end) - x(start)), rowHeight - 4);
    ctx.globalAlpha = 1;
  }
}

function span(start, end) { return `${start.toFixed(1)}–${end === null || end === undefined ? "…" : end.toFixed(1)} s`; }

function renderLive() {
  const items = [...state.live.values()].reverse().map((h) => {
    const item = document.createElement("li");
    item.dataset.query = h.query;
    item.dataset.state = h.type === "end" ? "ended" : "open";
    item.style.setProperty("--color", color(h.query_index));
    const query = Object.assign(document.createElement("span"), { className: "query", textContent: h.query });
    item.append(query, ` ${span(h.start, h.end)}, score ${h.score.toFixed(2)} `);
    if (h.type !== "end") item.append(Object.assign(document.createElement("span"), { className: "open", textContent: "● open" }));
    return item;
  });
  if (!items.length) items.push(Object.assign(document.createElement("li"), { className: "muted empty", textContent: "None yet." }));
  $("#live-highlights").replaceChildren(...items);
}

// --- streams and stored highlights ---------------------------------------------------------------

function cell(text, className = "") {
  return Object.assign(document.createElement("td"), { textContent: text, className });
}

async function refreshStreams() {
  const streams = await (await api("/api/streams")).json();
  const rows = streams.map((s) => {
    const row = document.createElement("tr");
    row.dataset.stream = s.name;
    const stateCell = cell("");
    stateCell.append(Object.assign(document.createElement("span"), { className: `state ${s.state || ""}`, textContent: s.state || "—" }));
    const fps = s.metrics.sampled_fps ?? s.metrics.input_fps;
    row.append(cell(s.name), stateCell, cell(fps === null || fps === undefined ? "—" : fps.toFixed(1)),
      cell(s.sentences.join(" · "), "sentences"));
    return row;
  });
  if (!rows.length) {
    const row = document.createElement("tr");
    row.append(Object.assign(cell("No streams. Start the camera, or add one through the API.", "muted"), { colSpan: 4 }));
    rows.push(row);
  }
  $("#streams tbody").replaceChildren(...rows);
  const filter = $("#stream-filter"), chosen = filter.value;
  const names = ["", ...new Set([...streams.map((s) => s.name), chosen].filter(Boolean))];
  filter.replaceChildren(...names.map((name) => new Option(name || "all", name, false, name === chosen)));
}

async function thumbnail(h) {
  const key = `${h.thumbnail_url}#${h.best_frame_ts}`;
  if (!state.thumbs.has(key)) {
    const blob = await (await api(h.thumbnail_url)).blob();
    state.thumbs.set(key, URL.createObjectURL(blob));
  }
  return state.thumbs.get(key);
}

async function refreshHighlights() {
  const stream = $("#stream-filter").value;
  const highlights = await (await api(`/api/highlights?limit=48${stream ? `&stream=${encodeURIComponent(stream)}` : ""}`)).json();
  const cards = await Promise.all(highlights.map(async (h) => {
    const card = Object.assign(document.createElement("article"), { className: "card" });
    card.dataset.query = h.query;
    const image = Object.assign(document.createElement("img"), { className: "thumb", alt: h.query });
    if (h.thumbnail_url) image.src = await thumbnail(h).catch(() => "");
    const body = Object.assign(document.createElement("div"), { className: "body" });
    body.append(Object.assign(document.createElement("span"), { className: "query", textContent: h.query }),
      `${h.stream} · ${span(h.start, h.end)}`, document.createElement("br"),
      `${new Date(h.wall_start * 1000).toLocaleTimeString()} · ${h.state}`);
    const play = Object.assign(document.createElement("button"), { type: "button", textContent: h.clip_url ? "Play clip" : "No clip" });
    play.disabled = !h.clip_url;
    play.addEventListener("click", () => playClip(h).catch(showError));
    card.append(image, body, play);
    return card;
  }));
  if (!cards.length) cards.push(Object.assign(document.createElement("p"), { className: "muted", textContent: "No highlights yet." }));
  $("#highlights").replaceChildren(...cards);
}

async function playClip(h) {
  const blob = await (await api(h.clip_url)).blob(); // a few seconds of mp4: fetched whole, with the token
  const video = $("#clip");
  if (video.src) URL.revokeObjectURL(video.src);
  video.src = URL.createObjectURL(blob);
  $("#player-title").textContent = `${h.query} — ${h.stream}, ${span(h.start, h.end)}`;
  $("#player").showModal();
}

$("#player").addEventListener("close", () => $("#clip").pause());
$("#refresh").addEventListener("click", () => refresh());
$("#stream-filter").addEventListener("change", () => refreshHighlights().catch(showError));

async function refresh() {
  try {
    await Promise.all([refreshStreams(), refreshHighlights()]);
  } catch (error) {
    showError(error);
  }
}

renderLegend();
drawPlot();
refresh();
setInterval(() => refreshStreams().catch(() => {}), 3000);
setInterval(() => refreshHighlights().catch(() => {}), 10000);
