// photoseek's page: plain JS over the JSON API, no build step and nothing fetched from outside.
"use strict";

const PAGE = 40; // results per request; the next page loads as the end of the grid comes into view
const FILTERS = ["under", "after", "before", "camera"];
const $ = (id) => document.getElementById(id);
let current = null; // {kind: "text" | "similar" | "image", params, file?, offset, done, busy}
let shown = []; // results on the page, in grid order

// -- the query lives in the URL -------------------------------------------------------------

function readUrl() {
  const url = new URLSearchParams(location.search);
  $("q").value = url.get("q") || "";
  $("rerank").checked = url.get("rerank") === "1";
  for (const name of FILTERS) $(name).value = url.get(name) || "";
  if (FILTERS.some((name) => url.get(name))) showFilters(true);
  const similar = url.get("similar");
  if (similar) start({ kind: "similar", id: similar });
  else if ($("q").value.trim()) start({ kind: "text" });
  else clear("");
}

function writeUrl(query) {
  const url = new URLSearchParams();
  if (query.kind === "similar") url.set("similar", query.id);
  else if (query.kind === "text") url.set("q", $("q").value.trim());
  if ($("rerank").checked && query.kind === "text") url.set("rerank", "1");
  for (const name of FILTERS) if ($(name).value) url.set(name, $(name).value);
  const target = "?" + url.toString();
  if (query.kind !== "image" && target !== location.search) history.pushState(null, "", target);
}

// -- searching --------------------------------------------------------------------------------

function fields() {
  const params = new URLSearchParams();
  for (const name of FILTERS) if ($(name).value) params.set(name, $(name).value);
  return params;
}

function start(query, push = false) {
  query.params = fields();
  if (query.kind === "text") {
    query.params.set("q", $("q").value.trim());
    if ($("rerank").checked) query.params.set("rerank", "1");
  }
  query.offset = 0;
  query.done = false;
  current = query;
  shown = [];
  $("grid").replaceChildren();
  if (push) writeUrl(query);
  more();
}

async function more() {
  const query = current;
  if (!query || query.done || query.busy) return;
  query.busy = true;
  const params = new URLSearchParams(query.params);
  params.set("k", PAGE);
  params.set("offset", query.offset);
  try {
    const body = await request(query, params);
    if (query !== current) return;
    query.offset += body.results.length;
    query.done = body.results.length < PAGE;
    body.results.forEach(addCard);
    const what = query.kind === "similar" ? "similar images" : "results";
    say(shown.length ? `${shown.length} ${what} · ${body.took_ms} ms` : "no results");
  } catch (error) {
    if (query === current) say(error.message, true);
    query.done = true;
  } finally {
    query.busy = false;
  }
  if (query === current && !query.done && nearEnd()) more();
}

function request(query, params) {
  if (query.kind === "similar") return api(`/api/images/${query.id}/similar?${params}`);
  if (query.kind === "text") return api(`/api/search?${params}`);
  const form = new FormData();
  for (const [key, value] of params) form.append(key, value);
  form.append("image", query.file, query.file.name || "pasted.png");
  return api("/api/search", { method: "POST", body: form });
}

async function api(url, options = {}) {
  return (await send(url, options)).json();
}

// A successful response (logging in first where the token is needed), or its one-line error.
async function send(url, options = {}) {
  const response = await fetch(url, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    await login();
    return send(url, options);
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({ error: response.statusText }));
    throw new Error(body.error || `HTTP ${response.status}`);
  }
  return response;
}

function login() {
  return new Promise((resolve) => {
    const dialog = $("login");
    dialog.onclose = async () => {
      const token = $("token").value;
      const response = await fetch("/api/login", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token }),
      });
      if (response.ok) resolve();
      else { $("token").value = ""; dialog.showModal(); }
    };
    if (!dialog.open) dialog.showModal();
  });
}

// -- results ----------------------------------------------------------------------------------

function addCard(result) {
  const card = document.createElement("figure");
  card.className = "card";
  card.tabIndex = 0;
  card.dataset.id = result.id;
  const img = document.createElement("img");
  img.loading = "lazy";
  img.src = result.thumbnail;
  img.alt = basename(result.path);
  img.onclick = () => openViewer(result);
  const info = document.createElement("div");
  info.className = "info";
  const score = document.createElement("span");
  score.className = "score";
  score.innerHTML = `score <b>${result.score.toFixed(3)}</b>`;
  if (result.itm_prob !== null && result.itm_prob !== undefined) {
    score.innerHTML += ` · match <b>${Math.round(result.itm_prob * 100)}%</b>`;
  }
  const similar = document.createElement("button");
  similar.className = "similar";
  similar.type = "button";
  similar.textContent = "similar";
  similar.onclick = () => findSimilar(result.id);
  info.append(score, similar);
  const name = document.createElement("figcaption");
  name.className = "name";
  name.textContent = basename(result.path);
  name.title = result.path;
  card.append(img, info, name);
  card.onkeydown = (event) => { if (event.key === "Enter") openViewer(result); };
  shown.push(result);
  $("grid").append(card);
}

function findSimilar(id) {
  if ($("viewer").open) $("viewer").close();
  start({ kind: "similar", id: String(id) }, true);
}

async function openViewer(result) {
  $("viewer-img").src = result.file;
  $("viewer-name").textContent = result.path;
  const meta = [["score", result.score.toFixed(4)], ["size", `${result.width} × ${result.height}`],
    ["taken", result.taken_at || "—"], ["id", result.id]];
  if (result.itm_prob !== null && result.itm_prob !== undefined) {
    meta.splice(1, 0, ["match", `${(result.itm_prob * 100).toFixed(1)}%`]);
  }
  $("viewer-meta").replaceChildren(...meta.flatMap(([key, value]) => {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = key;
    dd.textContent = value;
    return [dt, dd];
  }));
  $("viewer-file").href = result.file;
  $("viewer-similar").onclick = () => findSimilar(result.id);
  offerExplain(result);
  $("viewer-texts").replaceChildren();
  if (!$("viewer").open) $("viewer").showModal();
  try {
    const body = await api(`/api/images/${result.id}/describe?k=5`);
    $("viewer-texts").replaceChildren(...body.texts.map((t) => {
      const li = document.createElement("li");
      li.textContent = `${t.text} (${t.score.toFixed(3)})`;
      return li;
    }));
  } catch (error) {
    $("viewer-texts").textContent = error.message;
  }
}

// The heatmap of where the text query matches, over the photo: a toggle on text searches.
function offerExplain(result) {
  const button = $("viewer-explain");
  const text = current && current.kind === "text" ? current.params.get("q") : "";
  button.hidden = !text;
  button.setAttribute("aria-pressed", "false");
  $("viewer-note").textContent = "";
  $("viewer-note").classList.remove("error");
  button.onclick = async () => {
    const showing = button.getAttribute("aria-pressed") === "true";
    if (showing) {
      $("viewer-img").src = result.file;
      button.setAttribute("aria-pressed", "false");
      $("viewer-note").textContent = "";
      return;
    }
    $("viewer-note").textContent = "explaining…";
    try {
      const url = `/api/images/${result.id}/explain?q=${encodeURIComponent(text)}`;
      const picture = await (await send(url)).blob();
      $("viewer-img").src = URL.createObjectURL(picture);
      button.setAttribute("aria-pressed", "true");
      $("viewer-note").textContent = `where “${text}” matches`;
    } catch (error) {
      $("viewer-note").textContent = error.message;
      $("viewer-note").classList.add("error");
    }
  };
}

// -- search by an image: drop or paste --------------------------------------------------------

function searchByImage(file) {
  if (!file || !file.type.startsWith("image/")) return say("that is not an image", true);
  $("q").value = "";
  start({ kind: "image", file });
  history.pushState(null, "", location.pathname);
}

function watchDrops() {
  let depth = 0;
  document.addEventListener("dragenter", (event) => {
    if (![...event.dataTransfer.types].includes("Files")) return;
    depth += 1;
    $("drop").hidden = false;
  });
  document.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) $("drop").hidden = true; });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    $("drop").hidden = true;
    searchByImage(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...event.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (file) searchByImage(file);
  });
}

// -- keyboard: / search, arrows move, Enter opens, Esc closes ---------------------------------

function watchKeys() {
  document.addEventListener("keydown", (event) => {
    const typing = event.target instanceof HTMLInputElement;
    if (event.key === "/" && !typing) { event.preventDefault(); $("q").focus(); return; }
    if (typing || $("viewer").open) return;
    const cards = [...$("grid").children];
    const at = cards.indexOf(document.activeElement);
    const columns = Math.max(1, Math.round($("grid").clientWidth / (cards[0]?.offsetWidth || 1)));
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns }[event.key];
    if (step && cards.length) {
      event.preventDefault();
      const next = cards[Math.min(cards.length - 1, Math.max(0, at < 0 ? 0 : at + step))];
      next.focus();
      next.scrollIntoView({ block: "nearest" });
    }
  });
}

// -- small parts ------------------------------------------------------------------------------

function say(text, error = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", error);
}

function clear(text) { current = null; shown = []; $("grid").replaceChildren(); say(text); }
function basename(path) { return path.split("/").pop(); }
function nearEnd() { return $("more").getBoundingClientRect().top < innerHeight + 600; }
function showFilters(open) { $("filters").hidden = !open; $("toggle-filters").setAttribute("aria-expanded", open); }

document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    if ($("q").value.trim()) start({ kind: "text" }, true);
  });
  $("toggle-filters").onclick = () => showFilters($("filters").hidden);
  $("close").onclick = () => $("viewer").close();
  new IntersectionObserver((entries) => { if (entries[0].isIntersecting) more(); },
    { rootMargin: "600px" }).observe($("more"));
  window.addEventListener("popstate", readUrl);
  watchDrops();
  watchKeys();
  readUrl();
});
