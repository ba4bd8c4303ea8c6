// dermo viewer page: uploads go to POST /api/predict one by one; the evaluation table comes from /api/eval and
// is sorted and filtered here; every image (upload or table row) is drawn by showView. Text from files and
// CSVs is only ever set as textContent.
"use strict";

const $ = (sel) => document.querySelector(sel);
let info = null;          // /api/info
let table = null;         // /api/eval
const sort = { key: "row", dir: 1 };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

const fmt = (x, digits = 4) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

async function getJSON(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (e) {
    throw new Error(`the viewer did not answer (${e.message}); is it still running?`);
  }
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON: said below */ }
  if (!response.ok || body === null) {
    throw new Error(body && body.error ? body.error : `HTTP ${response.status} from ${url}`);
  }
  return body;
}

// ------------------------------------------------------------------------------------------ one image's view
function picture(src, cls, alt) {
  return el("img", { src, class: cls, alt });
}

function memberBlock(view, member, index) {
  const block = el("div", { class: "pictures member", "data-member": index, hidden: index > 0 });
  block.append(el("figure", {},
    el("div", { class: "stack" }, picture(member.preprocessed, "base", "preprocessed"),
      picture(member.contour, "contour", "lesion contour")),
    el("figcaption", { text: `preprocessed (${member.image_size} px) + lesion mask` })));
  view.classes.forEach((name, k) => {
    block.append(el("figure", { class: "cam", "data-class": name },
      el("div", { class: "stack" }, picture(member.preprocessed, "base", "preprocessed"),
        picture(member.cams[k], "heat", `CAM of ${name}`), picture(member.contour, "contour", "lesion contour")),
      el("figcaption", { text: `CAM ${name} · p ${fmt(member.probs[k], 3)}` })));
  });
  return block;
}

function probTable(view) {
  const several = view.members.length > 1;
  const head = el("tr", {}, el("th", { text: "class" }), el("th", { text: several ? "ensemble" : "probability" }));
  if (several) view.members.forEach((m) => head.append(el("th", { text: m.name })));
  const rows = view.classes.map((name, k) => {
    const tr = el("tr", { "data-class": name, class: name === view.predicted ? "top" : null },
      el("td", { text: name }),
      el("td", { class: "prob", "data-class": name, "data-value": String(view.probs[k]) },
        fmt(view.probs[k]), el("span", { class: "bar", style: `width:${Math.round(100 * view.probs[k])}px` })));
    if (several) view.members.forEach((m) => tr.append(el("td", { class: "member-prob", text: fmt(m.probs[k]) })));
    return tr;
  });
  return el("table", { class: "probs" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

function focusLine(view) {
  const parts = view.members.map((m) => (view.members.length > 1 ? `${m.name} ` : "") + fmt(m.lesion_focus, 2));
  return el("p", { class: "focus" }, "lesion focus: ", el("b", { text: parts.join(" · ") }),
    el("span", { class: "meta", text: " (share of the predicted class's positive CAM mass inside the lesion mask)" }));
}

function showView(card, view, seconds) {
  card.className = "card done";
  card.dataset.state = "done";
  card.replaceChildren();
  const truth = view.label ? el("span", {}, " · true ", el("b", { text: view.label })) : null;
  const wrong = view.label && view.label !== view.predicted;
  card.append(el("h2", {}, view.name, el("span", { class: "meta", text:
    `  ${view.width}×${view.height} px · ${seconds.toFixed(2)} s` })));
  card.append(el("p", { class: wrong ? "verdict wrong" : "verdict" }, "predicted ",
    el("b", { class: "predicted", text: view.predicted }), ` ${fmt(view.confidence, 3)}`, truth));
  const pictures = el("div", { class: "pictures" },
    el("figure", { class: "original" }, picture(view.original, "original", "original"),
      el("figcaption", { text: "original" })));
  if (view.members.length > 1) {
    const select = el("select", { class: "member-select" },
      ...view.members.map((m, i) => el("option", { value: i, text: m.name })));
    select.addEventListener("change", () => card.querySelectorAll(".member").forEach((b) => {
      b.hidden = b.dataset.member !== select.value;
    }));
    card.append(el("p", {}, "pictures of member ", select));
  }
  view.members.forEach((m, i) => pictures.append(memberBlock(view, m, i)));
  card.append(pictures, probTable(view), focusLine(view));
}

function showError(card, name, message) {
  card.className = "card error";
  card.dataset.state = "error";
  card.replaceChildren(el("h2", { text: name }), el("p", { class: "message", text: message }));
}

// ------------------------------------------------------------------------------------------------- uploads
async function upload(file, card) {
  if (file.size > info.max_upload) {
    const mb = (x) => (x / 2 ** 20).toFixed(1);
    showError(card, file.name, `${file.name}: upload too large (${mb(file.size)} MB; the limit is ` +
      `${info.max_upload / 2 ** 20} MB, set by --max-upload-mb)`);
    return;
  }
  const start = performance.now();
  try {
    const view = await getJSON(`/api/predict?name=${encodeURIComponent(file.name)}`,
      { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
    showView(card, view, (performance.now() - start) / 1000);
  } catch (e) {
    showError(card, file.name, e.message);
  }
}

async function uploadAll(files) {
  const group = el("div", { class: "group" });
  $("#results").prepend(group);
  const cards = [...files].map((f) => {
    const card = el("article", { class: "card busy", "data-state": "busy" }, el("h2", { text: f.name }),
      el("p", { class: "meta", text: "predicting…" }));
    group.append(card);
    return card;
  });
  for (let i = 0; i < files.length; i++) await upload(files[i], cards[i]);
}

// ----------------------------------------------------------------------------------------- evaluation table
function columns() {
  const cols = [["row", "#"], ["name", "image"]];
  if (table.labelled) cols.push(["label", "true"]);
  cols.push(["predicted", "predicted"], ["confidence", "confidence"]);
  if (table.has_focus) cols.push(["lesion_focus", "lesion focus"]);
  table.classes.forEach((c, k) => cols.push([`p${k}`, `p(${c})`]));
  return cols;
}

const value = (row, key) => (key.startsWith("p") && /^p\d+$/.test(key) ? row.probs[+key.slice(1)] : row[key]);

function numberOr(input, fallback) {
  return input.value === "" ? fallback : Number(input.value);
}

function shownRows() {
  const miss = $("#misclassified").checked, t = $("#true-class").value, p = $("#pred-class").value;
  const c0 = numberOr($("#conf-min"), -Infinity), c1 = numberOr($("#conf-max"), Infinity);
  const f0 = numberOr($("#focus-min"), -Infinity), f1 = numberOr($("#focus-max"), Infinity);
  const focusFiltered = $("#focus-min").value !== "" || $("#focus-max").value !== "";
  const rows = table.rows.filter((r) => (!miss || (r.label !== null && r.label !== r.predicted)) &&
    (!t || r.label === t) && (!p || r.predicted === p) && r.confidence >= c0 && r.confidence <= c1 &&
    (!focusFiltered || (r.lesion_focus !== null && r.lesion_focus >= f0 && r.lesion_focus <= f1)));
  return rows.sort((a, b) => {
    const x = value(a, sort.key), y = value(b, sort.key);
    if (x === y) return a.row - b.row;
    if (x === null) return 1;
    if (y === null) return -1;
    return (x < y ? -1 : 1) * sort.dir;
  });
}

function renderTable() {
  const cols = columns();
  const head = el("tr", {}, ...cols.map(([key, title]) => {
    const th = el("th", { "data-key": key, text: title, class: key === sort.key ? (sort.dir > 0 ? "asc" : "desc") : null });
    th.addEventListener("click", () => {
      sort.dir = sort.key === key ? -sort.dir : 1;
      sort.key = key;
      renderTable();
    });
    return th;
  }));
  $("#eval-table thead").replaceChildren(head);
  const rows = shownRows();
  $("#eval-table tbody").replaceChildren(...rows.map((r) => {
    const tr = el("tr", { "data-row": r.row, title: r.path,
      class: r.label !== null && r.label !== r.predicted ? "wrong" : null });
    for (const [key] of cols) {
      const v = value(r, key);
      tr.append(el("td", { text: typeof v === "number" && key !== "row" ? fmt(v, 3) : (v ?? "–") }));
    }
    tr.addEventListener("click", () => openRow(r.row, tr));
    return tr;
  }));
  $("#eval-count").textContent = `showing ${rows.length} of ${table.rows.length}`;
}

async function openRow(index, tr) {
  document.querySelectorAll("#eval-table tr.selected").forEach((x) => x.classList.remove("selected"));
  tr.classList.add("selected");
  const card = el("article", { class: "card busy", "data-state": "busy", "data-row": index },
    el("h2", { text: table.rows[index].name }), el("p", { class: "meta", text: "predicting…" }));
  $("#row-view").replaceChildren(card);
  const start = performance.now();
  try {
    showView(card, await getJSON(`/api/eval/${index}`), (performance.now() - start) / 1000);
  } catch (e) {
    showError(card, table.rows[index].name, e.message);
  }
  card.scrollIntoView({ block: "nearest" });
}

async function loadEval() {
  table = await getJSON("/api/eval");
  const links = table.figures.map((f) => el("a", { href: `/files/eval/${f}`, target: "_blank", text: f }));
  $("#eval-head").replaceChildren(`${table.folder}: ${table.rows.length} images · `,
    ...links.flatMap((a) => [a, " "]));
  if (table.stale) {
    $("#eval-head").append(el("strong", { class: "stale", text: ` Stale: ${table.stale}` }));
  }
  for (const id of ["#true-class", "#pred-class"]) {
    table.classes.forEach((c) => $(id).append(el("option", { value: c, text: c })));
  }
  $("#miss-box").hidden = $("#true-box").hidden = !table.labelled;
  $("#focus-box").hidden = !table.has_focus;
  document.querySelectorAll(".filters input, .filters select").forEach((x) => {
    x.addEventListener("input", renderTable);
    x.addEventListener("change", renderTable);
  });
  renderTable();
}

// ------------------------------------------------------------------------------------------------ the page
function showTab(name) {
  $("#images").hidden = name !== "images";
  $("#evaluation").hidden = name !== "eval";
  $("#tab-images").classList.toggle("active", name === "images");
  $("#tab-eval").classList.toggle("active", name === "eval");
}

async function start() {
  try {
    info = await getJSON("/api/info");
  } catch (e) {
    $("#results").append(el("article", { class: "card error" }, el("p", { class: "message", text: e.message })));
    return;
  }
  const w = info.weights ? ` weights ${info.weights.join(" ")}` : "";
  $("#models").textContent = `${info.members.map((m) => m.name).join(" + ")}${w} · ${info.classes.join(", ")}`;
  $("#opacity").addEventListener("input", (e) =>
    document.documentElement.style.setProperty("--cam-opacity", e.target.value / 100));
  $("#contour").addEventListener("change", (e) => document.body.classList.toggle("no-contour", !e.target.checked));
  $("#files").addEventListener("change", (e) => { uploadAll([...e.target.files]); e.target.value = ""; });
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    uploadAll([...e.dataTransfer.files]);
  });
  $("#tab-images").addEventListener("click", () => showTab("images"));
  $("#tab-eval").addEventListener("click", () => showTab("eval"));
  if (info.eval) {
    $("#tab-eval").hidden = false;
    try { await loadEval(); } catch (e) { $("#eval-head").textContent = e.message; }
  }
  document.body.dataset.ready = "1";
}

start();
