// vatt search: the page over the JSON API of `vatt serve` (no build step, no libraries).
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 24; // moments asked for at a time ("Load more" asks for PAGE more)
const PER_FILE = 2; // moments of one file shown before "N more in this file"
const NAME_CHARS = 38; // longer file names keep their start and end: "holiday_2019_…_beach.mp4"

let maxK = 1000;
let seq = 0; // every search gets the next number; an answer that is not the latest is dropped
let query = null; // the search on screen: {label, url(k), body, k}
let shown = []; // the moments on screen, in order (previous/next in the player)
let current = -1; // index in `shown` of the moment in the player

function fmtTime(s) {
  const m = Math.floor(s / 60);
  const sec = s - 60 * m;
  return `${m}:${sec.toFixed(1).padStart(4, "0")}`;
}

// "a/very/long/folder/name/clip.mp4" -> "a/very/lo…name/clip.mp4": the end (the file name and its
// extension) matters as much as the start.
function middleEllipsis(text, max = NAME_CHARS) {
  if (text.length <= max) return text;
  const tail = Math.ceil((max - 1) * 0.55);
  return `${text.slice(0, max - 1 - tail)}…${text.slice(text.length - tail)}`;
}

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", kind === "error");
}

function setBusy(busy) {
  document.body.classList.toggle("busy", busy);
  $("results").setAttribute("aria-busy", busy ? "true" : "false");
  $("search-button").textContent = busy ? "Searching…" : "Search";
}

class NetworkError extends Error {}

async function api(url, options) {
  let resp;
  try {
    resp = await fetch(url, options);
  } catch (e) {
    throw new NetworkError("Cannot reach the vatt server: is `vatt serve` still running? Start it again and retry.");
  }
  let body;
  try {
    body = await resp.json();
  } catch (e) {
    throw new Error(`the server answered ${resp.status} ${resp.statusText}`.trim());
  }
  if (!resp.ok) throw new Error(body.error || `the server answered ${resp.status}`);
  return body;
}

// -- results --------------------------------------------------------------------------------------
function card(r, rank, twins, hiddenSiblings) {
  const el = document.createElement("article");
  el.className = "result";
  el.dataset.path = r.path;
  el.dataset.start = r.start;
  el.dataset.end = r.end;
  el.dataset.media = r.media;
  el.dataset.index = String(shown.length);
  el.tabIndex = 0;
  const position = shown.length;
  shown.push(r);

  const thumb = document.createElement("div");
  thumb.className = "thumb";
  const img = document.createElement("img");
  img.src = r.thumbnail;
  img.alt = `${r.path} at ${fmtTime(r.start)}`;
  img.loading = "lazy";
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = `${fmtTime(r.start)}–${fmtTime(r.end)}`;
  const play = document.createElement("span");
  play.className = "play";
  play.textContent = "▶";
  thumb.append(img, badge, play);

  const meta = document.createElement("div");
  meta.className = "meta";
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = middleEllipsis(r.path);
  name.title = r.path;
  const row = document.createElement("div");
  row.className = "row";
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = `#${rank} · score ${r.score.toFixed(3)}`;
  const bar = document.createElement("span");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = `${Math.max(0, Math.min(1, r.score)) * 100}%`;
  bar.append(fill);
  row.append(score, bar);
  meta.append(name, row);
  if (twins.length) {
    const t = document.createElement("div");
    t.className = "twins muted";
    t.textContent = `+ ${twins.length} identical: ${twins.map((x) => middleEllipsis(x.path, 28)).join(", ")}`;
    t.title = twins.map((x) => x.path).join("\n");
    meta.append(t);
  }
  const actions = document.createElement("div");
  actions.className = "card-actions";
  const more = document.createElement("button");
  more.type = "button";
  more.className = "more secondary";
  more.textContent = "More like this";
  more.addEventListener("click", (ev) => {
    ev.stopPropagation();
    similar(r);
  });
  actions.append(more);
  if (hiddenSiblings.length) {
    const sib = document.createElement("button");
    sib.type = "button";
    sib.className = "siblings secondary";
    sib.textContent = `${hiddenSiblings.length} more in this file`;
    sib.addEventListener("click", (ev) => {
      ev.stopPropagation();
      const cards = hiddenSiblings.map((s) => card(s.r, s.rank, s.twins, []));
      el.after(...cards);
      sib.remove();
    });
    actions.append(sib);
  }
  meta.append(actions);

  el.append(thumb, meta);
  el.addEventListener("click", () => playAt(position));
  el.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") playAt(position);
  });
  return el;
}

// Copies of one clip (same `content`) become one card; a file's moments after its PER_FILE best
// wait behind "N more in this file".
function group(results) {
  const byContent = new Map();
  const perFile = new Map();
  const out = [];
  results.forEach((r, i) => {
    const twinOf = byContent.get(r.content);
    if (twinOf) {
      twinOf.twins.push(r);
      return;
    }
    const entry = { r, rank: i + 1, twins: [], hidden: [] };
    byContent.set(r.content, entry);
    const first = perFile.get(r.file);
    if (!first) {
      perFile.set(r.file, { head: entry, count: 1 });
      out.push(entry);
    } else if (first.count < PER_FILE) {
      first.count += 1;
      out.push(entry);
    } else {
      first.head.hidden.push(entry);
    }
  });
  return out;
}

function show(res, label) {
  const results = res.results;
  shown = [];
  current = -1;
  const box = $("results");
  box.replaceChildren(...group(results).map((g) => card(g.r, g.rank, g.twins, g.hidden)));
  const n = results.length;
  setStatus(n ? `${n} moment${n === 1 ? "" : "s"} for ${label} · ${res.took_ms.toFixed(1)} ms` : `nothing found for ${label}`);
  const words = res.words || { unknown: [], ignored: [] };
  const notes = [];
  if (words.unknown.length) {
    notes.push(`Not in the model's vocabulary (read as "unknown", so scores say little about them): ${words.unknown.join(", ")}`);
  }
  if (words.ignored.length) notes.push(`Only the first words are used; ignored: ${words.ignored.join(" ")}`);
  $("words").textContent = notes.join(" · ");
  $("words").hidden = !notes.length;
  $("load-more").hidden = !(n >= query.k && query.k < maxK);
}

// One search at a time on screen: a newer one makes older answers stale.
async function run(q) {
  const mine = ++seq;
  query = q;
  setBusy(true);
  setStatus(q.pending);
  try {
    const res = await api(q.url(q.k), q.options);
    if (mine !== seq) return; // a newer search started meanwhile: drop this answer
    show(res, q.label);
  } catch (e) {
    if (mine !== seq) return;
    setStatus(e.message, "error");
  } finally {
    if (mine === seq) setBusy(false);
  }
}

function searchText(text) {
  if (!text.trim()) return;
  history.replaceState(null, "", `?q=${encodeURIComponent(text)}`);
  return run({ label: `“${text}”`, pending: "searching…", k: PAGE,
               url: (k) => `/api/search?q=${encodeURIComponent(text)}&k=${k}` });
}

function similar(r) {
  return run({ label: `moments like ${r.path} ${fmtTime(r.start)}`, pending: "searching…", k: PAGE,
               url: (k) => `/api/similar?window=${r.window}&k=${k}` });
}

function searchAudio(file) {
  return run({ label: `the sound of ${file.name}`, pending: `listening to ${file.name}…`, k: PAGE,
               url: (k) => `/api/audio?k=${k}`, options: { method: "POST", body: file } });
}

function loadMore() {
  if (!query) return;
  return run({ ...query, k: Math.min(maxK, query.k + PAGE) });
}

// -- the player -----------------------------------------------------------------------------------
function playAt(position) {
  const r = shown[position];
  if (!r) return;
  current = position;
  document.querySelectorAll("#results .result.playing").forEach((c) => c.classList.remove("playing"));
  const el = document.querySelector(`#results .result[data-index="${position}"]`);
  if (el) el.classList.add("playing");
  const video = $("player");
  $("player-panel").hidden = false;
  $("player-title").textContent = middleEllipsis(r.path, 60);
  $("player-title").title = r.path;
  $("player-range").textContent = `moment ${fmtTime(r.start)}–${fmtTime(r.end)} · score ${r.score.toFixed(3)}`;
  $("player-prev").disabled = position <= 0;
  $("player-next").disabled = position >= shown.length - 1;
  video.dataset.seeked = "0";
  video.dataset.stoppedAt = "";
  video.dataset.start = String(r.start);
  video.dataset.end = String(r.end);
  const start = () => {
    video.currentTime = r.start;
  };
  video.onseeked = () => {
    if (video.dataset.seeked === "0") {
      video.dataset.seeked = "1";
      video.dataset.seekedAt = String(video.currentTime);
    }
  };
  const src = r.media;
  if (video.getAttribute("src") !== src) {
    video.replaceChildren();
    if (r.captions) {
      const track = document.createElement("track");
      track.kind = "captions";
      track.label = "captions";
      track.srclang = "en";
      track.src = r.captions;
      track.default = true;
      video.append(track);
    }
    video.setAttribute("src", src);
    video.addEventListener("loadedmetadata", start, { once: true });
    video.load();
  } else {
    start();
  }
  drawTimeline(r, r.duration || video.duration);
  video.play().catch(() => {}); // autoplay may be refused; the controls still work
  $("player-panel").scrollIntoView({ behavior: "smooth", block: "start" });
}

function drawTimeline(r, duration) {
  const mark = $("timeline-moment");
  if (!duration || !isFinite(duration)) {
    mark.style.left = "0%";
    mark.style.width = "0%";
    return;
  }
  mark.style.left = `${(100 * r.start) / duration}%`;
  mark.style.width = `${(100 * Math.max(0, Math.min(r.end, duration) - r.start)) / duration}%`;
  mark.title = `the moment: ${fmtTime(r.start)}–${fmtTime(r.end)}`;
}

function onTimeUpdate() {
  const video = $("player");
  const r = shown[current];
  if (r && video.duration) {
    $("timeline-now").style.left = `${(100 * video.currentTime) / video.duration}%`;
  }
  if (!r || video.dataset.seeked !== "1" || video.dataset.stoppedAt) return;
  if (video.currentTime >= r.end - 0.02 || video.ended) endOfMoment();
}

// The moment is over (its end, or the file's end): loop it, or stop there.
function endOfMoment() {
  const video = $("player");
  const r = shown[current];
  if (!r || video.dataset.seeked !== "1") return;
  if ($("player-loop").checked) {
    video.currentTime = r.start;
    video.play().catch(() => {});
  } else {
    video.pause();
    video.dataset.stoppedAt = String(video.currentTime);
  }
}

// Clicking the timeline seeks there (the moment stays marked).
function onTimelineClick(ev) {
  const video = $("player");
  if (!video.duration) return;
  const box = $("timeline").getBoundingClientRect();
  video.currentTime = Math.max(0, Math.min(1, (ev.clientX - box.left) / box.width)) * video.duration;
}

// Keys, as in other media apps: "/" searches, Escape closes the player, "n"/"p" next/previous
// moment, "r" replays it (not while typing in a field).
function onKey(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName);
  if (ev.key === "Escape" && !$("player-panel").hidden) {
    $("player").pause();
    $("player-panel").hidden = true;
    return;
  }
  if (typing) return;
  if (ev.key === "/") {
    ev.preventDefault();
    $("query").focus();
    $("query").select();
  } else if (current >= 0 && ev.key === "n") {
    playAt(Math.min(current + 1, shown.length - 1));
  } else if (current >= 0 && ev.key === "p") {
    playAt(Math.max(current - 1, 0));
  } else if (current >= 0 && ev.key === "r") {
    playAt(current);
  }
}

// -- the library line -----------------------------------------------------------------------------
function showLibrary(info) {
  maxK = info.max_k || maxK;
  const lib = $("library");
  lib.replaceChildren();
  const text = document.createElement("span");
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  text.textContent = `${plural(info.files, "file")} · ${plural(info.windows, "moment")} of ${info.window_seconds} s` +
    (info.model ? ` · model ${info.model}` : "");
  lib.append(text);
  if (info.skipped_count) {
    const d = document.createElement("details");
    d.id = "skipped";
    const s = document.createElement("summary");
    s.textContent = `${info.skipped_count} skipped`;
    const list = document.createElement("ul");
    for (const b of info.skipped) {
      const li = document.createElement("li");
      li.textContent = `${b.path} — ${b.reason.replaceAll("_", " ")}`;
      list.append(li);
    }
    if (info.skipped_count > info.skipped.length) {
      const li = document.createElement("li");
      li.textContent = `… and ${info.skipped_count - info.skipped.length} more (index.json lists them all)`;
      list.append(li);
    }
    d.append(s, list);
    lib.append(" · ", d);
  }
}

async function init() {
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    searchText($("query").value);
  });
  $("audio-file").addEventListener("change", (ev) => {
    const f = ev.target.files[0];
    if (f) searchAudio(f);
    ev.target.value = "";
  });
  $("player-close").addEventListener("click", () => {
    $("player").pause();
    $("player-panel").hidden = true;
  });
  $("player-similar").addEventListener("click", () => current >= 0 && similar(shown[current]));
  $("player-prev").addEventListener("click", () => playAt(current - 1));
  $("player-next").addEventListener("click", () => playAt(current + 1));
  $("player-replay").addEventListener("click", () => playAt(current));
  $("load-more").addEventListener("click", loadMore);
  document.addEventListener("keydown", onKey);
  $("timeline").addEventListener("click", onTimelineClick);
  const video = $("player");
  video.addEventListener("timeupdate", onTimeUpdate);
  video.addEventListener("ended", endOfMoment);
  video.addEventListener("play", () => { video.dataset.stoppedAt = ""; });
  video.addEventListener("loadedmetadata", () => current >= 0 && drawTimeline(shown[current], video.duration));
  try {
    const info = await api("/api/info");
    showLibrary(info);
    if (!info.text_search) {
      $("query").disabled = true;
      $("query").placeholder = "text search needs a model (vatt serve INDEX --model DIR)";
    }
    if (!info.audio_search) $("audio-label").hidden = true;
  } catch (e) {
    setStatus(e.message, "error");
  }
  const q = new URLSearchParams(location.search).get("q");
  if (q) {
    $("query").value = q;
    searchText(q);
  } else {
    setStatus("Type what happens in the moment you are looking for, or search by a sound.");
  }
}

init();
