// The page over the JSON API: upload or click to search, upload to detect. No build step.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const auth = token ? { Authorization: "Bearer " + token } : {};
const withToken = (url) => (token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url);
const $ = (id) => document.getElementById(id);

async function call(url, options = {}) {
  const response = await fetch(url, { ...options, headers: { ...auth, ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function upload(file) {
  const form = new FormData();
  form.append("file", file);
  return { method: "POST", body: form };
}

function showQuery(src) {
  $("query").innerHTML = "";
  const img = document.createElement("img");
  img.src = src;
  img.alt = "query";
  $("query").appendChild(img);
}

function showResults(data) {
  const grid = $("results");
  grid.innerHTML = "";
  for (const hit of data.results) {
    const card = document.createElement("div");
    card.className = "hit";
    card.dataset.id = hit.id;
    card.dataset.path = hit.path;
    card.title = hit.path;
    card.innerHTML =  // numbers only here: names from the index (labels, paths) go in as text
      `<img src="${withToken("thumbs/" + Number(hit.id))}" alt="">` +
      `<div class="meta"><span>#${Number(hit.rank)}</span><span>${Number(hit.distance).toFixed(4)}</span>` +
      `<b></b></div><div class="path"></div>`;
    card.querySelector("b").textContent = hit.label ?? "";
    card.querySelector(".path").textContent = hit.path.split("/").pop();
    card.addEventListener("click", () => searchById(hit.id));
    grid.appendChild(card);
  }
  $("status").textContent = `${data.results.length} results`;
  $("status").className = "muted";
  document.body.dataset.state = "results";
}

function fail(where, error) {
  $(where).textContent = error.message;
  $(where).className = "error";
  document.body.dataset.state = "error";
}

async function searchFile(file) {
  showQuery(URL.createObjectURL(file));
  $("status").textContent = "searching…";
  try {
    showResults(await call(`search?k=${$("k").value}`, upload(file)));
  } catch (e) {
    fail("status", e);
  }
}

async function searchById(id) {
  showQuery(withToken("thumbs/" + id));
  try {
    showResults(await call(`search?id=${id}&k=${$("k").value}`));
  } catch (e) {
    fail("status", e);
  }
}

async function detectFile(file) {
  const url = URL.createObjectURL(file);
  $("detect-status").textContent = "detecting…";
  try {
    const data = await call(`detect?threshold=${$("threshold").value}`, upload(file));
    const img = new Image();
    img.onload = () => drawBoxes(img, data);
    img.src = url;
  } catch (e) {
    fail("detect-status", e);
  }
}

function drawBoxes(img, data) {
  const canvas = $("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  canvas.style.width = Math.min(960, Math.max(img.naturalWidth, 480)) + "px"; // small photos shown larger
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  ctx.lineWidth = Math.max(2, img.naturalWidth / 300);
  ctx.font = "14px sans-serif";
  $("boxes").innerHTML = "";
  data.detections.forEach((d, i) => {
    const [x1, y1, x2, y2] = d.box;
    ctx.strokeStyle = ctx.fillStyle = `hsl(${(i * 67) % 360} 80% 45%)`;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillText(`${d.label} ${d.score.toFixed(2)}`, x1 + 2, Math.max(12, y1 - 3));
    const li = document.createElement("li");
    li.textContent = `${d.label} ${d.score.toFixed(3)} [${d.box.map(Math.round).join(", ")}]`;
    $("boxes").appendChild(li);
  });
  $("detect-status").textContent = `${data.detections.length} objects`;
  $("detect-status").className = "muted";
  document.body.dataset.state = "detected";
}

function tile(id, caption, path) {
  const card = document.createElement("div");
  card.className = "hit";
  card.title = path;
  card.innerHTML = `<img src="${withToken("thumbs/" + Number(id))}" alt=""><div class="meta"><span></span></div>` +
    `<div class="path"></div>`;
  card.querySelector(".meta span").textContent = caption;
  card.querySelector(".path").textContent = path.split("/").pop();
  return card;
}

async function findDuplicates() {
  const threshold = $("dup-threshold").value;
  $("dup-status").textContent = "looking…";
  try {
    const data = await call("duplicates" + (threshold === "" ? "" : `?threshold=${Number(threshold)}`));
    const groups = $("groups");
    groups.innerHTML = "";
    for (const g of data.groups) {
      const row = document.createElement("div");
      row.className = "group grid";
      row.appendChild(tile(g.keep_id, "keep", g.keep)).classList.add("keep");
      for (const d of g.duplicates) {
        row.appendChild(tile(d.id, d.exact ? "same bytes" : Number(d.distance).toFixed(4), d.path));
      }
      groups.appendChild(row);
    }
    const shown = data.total > data.groups.length ? `, first ${data.groups.length} shown` : "";
    $("dup-status").textContent = `${data.total} group${data.total === 1 ? "" : "s"}${shown}`;
    $("dup-status").className = "muted";
    document.body.dataset.state = "duplicates";
  } catch (e) {
    fail("dup-status", e);
  }
}

function dropZone(zone, input, handle) {
  input.addEventListener("change", () => input.files[0] && handle(input.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files[0]) handle(e.dataTransfer.files[0]);
  });
}

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
    document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("hidden", p.id !== tab.dataset.tab));
  });
}
dropZone($("drop"), $("file"), searchFile);
dropZone($("detect-drop"), $("detect-file"), detectFile);
$("find-duplicates").addEventListener("click", findDuplicates);
call("stats").then((s) => {
  $("stats").textContent = `${s.images.toLocaleString()} images · ${s.factory} · model ${s.model.fingerprint}`;
  if (!s.detector) $("tab-detect").classList.add("hidden");
}).catch((e) => fail("status", e));
