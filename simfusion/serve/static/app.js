// The page of simfusion's service: upload an image (or click a result) and show similar items.
"use strict";

const $ = (id) => document.getElementById(id);
let lastQuery = null; // {file} or {id}: searched again when the filters change

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.style.display = message ? "block" : "none";
}

function params() {
  const out = new URLSearchParams();
  out.set("top_k", $("top_k").value || "12");
  if ($("same_category").checked) out.set("same_category", "true");
  if ($("category").value) out.append("filter", "category=" + $("category").value);
  return out;
}

async function call(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    throw new Error(`HTTP ${response.status}: the server did not answer with JSON`);
  }
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${body.error || JSON.stringify(body)}`);
  return body;
}

async function search(query) {
  lastQuery = query;
  showError("");
  $("status").textContent = "Searching…";
  try {
    let answer;
    if (query.file) {
      const form = new FormData();
      form.append("image", query.file, query.file.name || "image");
      answer = await call("search?" + params(), { method: "POST", body: form });
    } else {
      answer = await call("search?" + params(), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ id: query.id }),
      });
    }
    render(query, answer);
  } catch (error) {
    $("status").textContent = "";
    $("query").replaceChildren();
    $("results").replaceChildren();
    showError(error.message);
  }
}

function render(query, answer) {
  const picture = document.createElement("img");
  picture.alt = "query";
  picture.src = query.file ? URL.createObjectURL(query.file) : `items/${encodeURIComponent(query.id)}/image`;
  const about = document.createElement("div");
  const category = answer.category || answer.inferred_category;
  about.textContent = (query.file ? query.file.name || "uploaded image" : `catalog item ${query.id}`) +
    (category ? ` · category: ${category}${answer.category ? "" : " (inferred)"}` : "");
  $("query").replaceChildren(picture, about);
  const results = answer.results || [];
  $("status").textContent = `${results.length} similar item${results.length === 1 ? "" : "s"}` +
    " (hover a tile for each view's score; click it for more like it)";
  $("results").replaceChildren(...results.map(tile));
}

const HIDDEN = new Set(["id", "score", "scores", "image", "image_path", "thumbnail", "detections", "box",
  "raw_score", "error", "indexed", "path"]);

function tile(hit) {
  const node = document.createElement("div");
  node.className = "tile";
  node.dataset.id = hit.id;
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = hit.id;
  img.src = `items/${encodeURIComponent(hit.id)}/image`;
  const score = document.createElement("div");
  score.className = "score";
  score.textContent = `${hit.score.toFixed(3)}  ${hit.id}`;
  const fields = document.createElement("div");
  fields.className = "fields";
  fields.textContent = Object.entries(hit)
    // file paths (the views' images) mean nothing to a visitor
    .filter(([key, value]) => !HIDDEN.has(key) && value !== null && typeof value !== "object" &&
      !(typeof value === "string" && value.startsWith("/")))
    .map(([key, value]) => `${key}: ${value}`).join(" · ");
  const views = document.createElement("div");
  views.className = "views";
  views.textContent = Object.entries(hit.scores || {}).map(([v, s]) => `${v} ${s.toFixed(3)}`).join(" · ");
  node.title = views.textContent;
  node.append(img, score, fields, views);
  node.addEventListener("click", () => search({ id: hit.id }));
  return node;
}

async function loadCategories() {
  try {
    const answer = await call("categories");
    for (const value of answer.values) {
      const option = document.createElement("option");
      option.value = option.textContent = value;
      $("category").append(option);
    }
  } catch (error) {
    showError("Could not load the categories: " + error.message);
  }
}

function pick(files) {
  if (files && files.length) search({ file: files[0] });
}

const drop = $("drop");
drop.addEventListener("click", () => $("file").click());
drop.addEventListener("keydown", (event) => { if (event.key === "Enter") $("file").click(); });
$("file").addEventListener("change", (event) => pick(event.target.files));
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  pick(event.dataTransfer.files);
});
for (const id of ["category", "same_category", "top_k"]) {
  $(id).addEventListener("change", () => { if (lastQuery) search(lastQuery); });
}
loadCategories();
