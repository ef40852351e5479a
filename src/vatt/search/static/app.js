// vatt search: the page over the JSON API of `vatt serve` (no build step, no libraries).
"use strict";

const $ = (id) => document.getElementById(id);
const K = 24;
let current = null; // the result playing in the player

function fmtTime(s) {
  const m = Math.floor(s / 60);
  const sec = s - 60 * m;
  return `${m}:${sec.toFixed(1).padStart(4, "0")}`;
}

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", !!isError);
}

async function api(url, options) {
  const resp = await fetch(url, options);
  let body;
  try {
    body = await resp.json();
  } catch (e) {
    throw new Error(`the server answered ${resp.status}`);
  }
  if (!resp.ok) throw new Error(body.error || `the server answered ${resp.status}`);
  return body;
}

function card(r, rank) {
  const el = document.createElement("article");
  el.className = "result";
  el.dataset.path = r.path;
  el.dataset.start = r.start;
  el.dataset.end = r.end;
  el.dataset.media = r.media;
  el.tabIndex = 0;

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
  name.textContent = r.path;
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
  const more = document.createElement("button");
  more.type = "button";
  more.className = "more secondary";
  more.textContent = "More like this";
  more.addEventListener("click", (ev) => {
    ev.stopPropagation();
    similar(r);
  });
  meta.append(name, row, more);

  el.append(thumb, meta);
  el.addEventListener("click", () => playResult(r, el));
  el.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") playResult(r, el);
  });
  return el;
}

function show(results, label, took) {
  const box = $("results");
  box.replaceChildren(...results.map((r, i) => card(r, i + 1)));
  const n = results.length;
  setStatus(n ? `${n} moment${n === 1 ? "" : "s"} for ${label} · ${took.toFixed(1)} ms` : `nothing found for ${label}`);
}

async function searchText(q) {
  if (!q.trim()) return;
  setStatus("searching…");
  history.replaceState(null, "", `?q=${encodeURIComponent(q)}`);
  try {
    const res = await api(`/api/search?q=${encodeURIComponent(q)}&k=${K}`);
    show(res.results, `“${q}”`, res.took_ms);
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function similar(r) {
  setStatus("searching…");
  try {
    const res = await api(`/api/similar?window=${r.window}&k=${K}`);
    show(res.results, `moments like ${r.path} ${fmtTime(r.start)}`, res.took_ms);
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function searchAudio(file) {
  setStatus(`listening to ${file.name}…`);
  try {
    const res = await api(`/api/audio?k=${K}`, { method: "POST", body: file });
    show(res.results, `the sound of ${file.name}`, res.took_ms);
  } catch (e) {
    setStatus(e.message, true);
  }
}

function playResult(r, el) {
  current = r;
  document.querySelectorAll("#results .result.playing").forEach((c) => c.classList.remove("playing"));
  if (el) el.classList.add("playing");
  const video = $("player");
  $("player-panel").hidden = false;
  $("player-title").textContent = r.path;
  $("player-range").textContent = `moment ${fmtTime(r.start)}–${fmtTime(r.end)} · score ${r.score.toFixed(3)}`;
  video.dataset.seeked = "0";
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
    video.setAttribute("src", src);
    video.addEventListener("loadedmetadata", start, { once: true });
    video.load();
  } else {
    start();
  }
  video.play().catch(() => {}); // autoplay may be refused; the controls still work
  $("player-panel").scrollIntoView({ behavior: "smooth", block: "start" });
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
  $("player-similar").addEventListener("click", () => current && similar(current));
  try {
    const info = await api("/api/info");
    $("library").textContent = `${info.files} files · ${info.windows} moments of ${info.window_seconds} s` +
      (info.model ? ` · model ${info.model}` : "");
    if (!info.text_search) {
      $("query").disabled = true;
      $("query").placeholder = "text search needs a model (vatt serve INDEX --model DIR)";
    }
    if (!info.audio_search) $("audio-label").hidden = true;
  } catch (e) {
    setStatus(e.message, true);
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
