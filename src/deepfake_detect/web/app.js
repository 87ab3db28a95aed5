// The page of `deepfake-detect serve`: each dropped file is one POST /api/v1/predict, answered with the rows of
// `deepfake-detect predict --format json`. Everything the server sends is shown as text (never as HTML).
"use strict";

const state = { detectors: [], results: [], queue: [], busy: false };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function setStatus() {
  const done = state.results.filter((r) => r.state !== "pending").length;
  const n = state.results.length;
  const faces = state.results.reduce((s, r) => s + (r.json ? r.json.rows.filter(isFace).length : 0), 0);
  $("status").textContent = n === 0 ? "Ready: drop photos or videos above." :
    `${done} of ${n} file(s) done, ${faces} face(s) scored` + (done < n ? " — working…" : ".");
  const any = state.results.some((r) => r.json);
  $("dl-json").disabled = $("dl-csv").disabled = !any;
}

const isFace = (row) => row.status === "ok" && row.face !== "mean";

// ------------------------------------------------------------------------------------------------ the detectors
async function loadDetectors() {
  const r = await fetch("/api/v1/detectors");
  const data = await r.json();
  state.detectors = data.detectors;
  const cards = $("cards");
  cards.textContent = "";
  for (const d of state.detectors) {
    $("camof").append(el("option", { value: d.name, text: d.name }));
    const auc = d.card && d.card.test ? `test AUC ${d.card.test.auc.toFixed(3)}` : "";
    cards.append(el("div", { class: "card", "data-detector": d.name },
      el("h3", { text: `${d.name}: ${d.task || ""}` }),
      el("p", { text: `fake when p(fake) > ${d.threshold.toFixed(3)}${auc ? "; " + auc : ""}. ` },
        el("a", { href: d.card_url, target: "_blank", rel: "noopener", text: "model card" })),
      notFor([d])));
  }
  setStatus();
}

function notFor(dets) {
  const box = el("details", { class: "notfor" }, el("summary", { text: "not for…" }));
  for (const d of dets) {
    box.append(el("div", { text: `${d.name} (` },
      el("a", { href: d.card_url, target: "_blank", rel: "noopener", text: "card" }), ") is not for:"));
    box.append(el("ul", {}, ...(d.not_for || []).map((s) => el("li", { text: s }))));
  }
  return box;
}

// ------------------------------------------------------------------------------------------------ uploading
function addFiles(files) {
  for (const file of files) {
    const item = { file, url: URL.createObjectURL(file), state: "pending", json: null, cams: false, progress: 0 };
    item.node = el("article", { class: "result", "data-name": file.name, "data-state": "pending" });
    $("results").append(item.node);
    state.results.push(item);
    enqueue(item, $("gradcam").checked);
  }
  setStatus();
}

function enqueue(item, gradcam) {
  item.state = "pending";
  item.node.setAttribute("data-state", "pending");
  state.queue.push({ item, gradcam });
  render(item);
  pump();
}

async function pump() {
  if (state.busy) return;
  const job = state.queue.shift();
  if (!job) return;
  state.busy = true;
  try {
    const json = await post(job.item, job.gradcam);
    job.item.json = json;
    job.item.cams = job.gradcam;
    job.item.state = "done";
  } catch (err) {
    job.item.state = "error";
    job.item.error = String(err.message || err);
  }
  job.item.node.setAttribute("data-state", job.item.state);
  render(job.item);
  setStatus();
  state.busy = false;
  pump();
}

function post(item, gradcam) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("files", item.file, item.file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/predict" + (gradcam ? "?gradcam=1" : ""));
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) { item.progress = e.loaded / e.total; render(item); }
    };
    xhr.upload.onload = () => { item.progress = 1; render(item); };
    xhr.onload = () => {
      const body = xhr.response;
      if (xhr.status === 200 && body) resolve(body);
      else reject(new Error((body && (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)))
                            || `HTTP ${xhr.status}`));
    };
    xhr.onerror = () => reject(new Error("the server did not answer (is `deepfake-detect serve` running?)"));
    xhr.send(form);
  });
}

// ------------------------------------------------------------------------------------------------ showing
const fmt = (p) => (p === null || p === undefined ? "–" : p.toFixed(3));

function verdictBadge(v) {
  return el("span", { class: `verdict ${v || "none"}`, text: v || "not scored" });
}

function render(item) {
  const node = item.node;
  node.textContent = "";
  node.className = "result" + (item.state === "error" ? " error" : "");
  node.append(el("h3", { text: item.file.name }));
  if (item.state === "pending") {
    const uploading = item.progress < 1;
    node.append(el("p", { text: uploading ? "uploading…" : "scoring (faces, both detectors" +
      ($("gradcam").checked ? ", Grad-CAM" : "") + ")…" }),
    uploading ? el("progress", { max: 1, value: item.progress }) : el("progress"));
    return;
  }
  if (item.state === "error") {
    node.append(el("p", { class: "err", text: item.error }));
    return;
  }
  const json = item.json;
  const info = json.files[0];
  const rows = json.rows;
  // the file's answer: a video's mean row; a picture is fake when any face is
  const scored = rows.filter((r) => r.status === "ok" && (info.kind === "image" || r.face === "mean"));
  const overall = scored.length ? (scored.some((r) => r.verdict === "fake") ? "fake" : "real") : null;
  const nFaces = rows.filter(isFace).length;
  node.firstChild.append(" ", verdictBadge(overall), el("span", { class: "small", text: overall ?
    ` ${nFaces} face(s)${info.kind === "video" ? " over its frames; the video's verdict is its mean" : ""}` :
    ` ${rows[0].status}` }));
  node.setAttribute("data-verdict", overall || "");
  const layout = el("div", { class: "layout" });
  if (info.kind === "image") {
    const pic = el("div", { class: "pic" }, el("img", { src: item.url, alt: item.file.name }));
    const [w, h] = info.size;
    for (const r of rows.filter(isFace)) {
      if (!r.box) continue;
      const [x0, y0, x1, y1] = r.box;
      const b = el("div", { class: `box ${r.verdict}`, "data-face": r.face, "data-box": r.box.join(" "),
                            "data-verdict": r.verdict },
        el("span", { text: `${r.face}: ${r.verdict}` }));
      Object.assign(b.style, { left: `${100 * x0 / w}%`, top: `${100 * y0 / h}%`, width: `${100 * (x1 - x0) / w}%`,
                               height: `${100 * (y1 - y0) / h}%` });
      pic.append(b);
    }
    layout.append(pic);
  } else {
    layout.append(el("video", { src: item.url, controls: true, muted: true, playsInline: true }));
  }
  const right = el("div", { class: "tablewrap" }, table(rows, info.kind === "video"));
  if ($("gradcam").checked) right.append(cams(rows));
  layout.append(right);
  node.append(layout);
}

function table(rows, video) {
  const dets = state.detectors;
  const head = el("tr", {}, ...(video ? [el("th", { text: "frame" })] : []), el("th", { text: "face" }),
    ...dets.map((d) => el("th", { text: `p(fake) ${d.name}` })), el("th", { text: "fired" }),
    el("th", { text: "verdict" }));
  const body = rows.map((r) => {
    const kind = r.face === "mean" ? "mean" : "face";
    const tr = el("tr", { class: kind, "data-face": r.face, "data-frame": r.frame === null ? "" : r.frame,
                          "data-verdict": r.verdict || "", "data-status": r.status });
    if (video) tr.append(el("td", { text: r.face === "mean" ? "video" : (r.frame === null ? "" : String(r.frame)) }));
    tr.append(el("td", { text: r.face === "mean" ? "mean of its faces" : String(r.face ?? "") }));
    if (r.status !== "ok") {
      tr.append(el("td", { colSpan: dets.length + 2, text: r.status }));
      return tr;
    }
    for (const d of dets) {
      const p = r[`p_fake_${d.name}`];
      const t = r[`threshold_${d.name}`];
      tr.append(el("td", { class: "p" + (p > t ? " over" : ""), "data-detector": d.name },
        el("span", { class: "pv", text: fmt(p) }), el("small", { text: ` / ${t.toFixed(3)}` })));
    }
    tr.append(el("td", { text: r.fired || "none" }));
    tr.append(el("td", {}, verdictBadge(r.verdict), notFor(dets)));
    return tr;
  });
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

function camsOf(r) {
  const which = $("camof").value;
  if (which !== "fired") return [which];
  if (r.fired) return r.fired.split(";");
  // none fired: the one closest to its threshold
  const d = state.detectors.slice().sort((a, b) =>
    (r[`p_fake_${b.name}`] - b.threshold) - (r[`p_fake_${a.name}`] - a.threshold))[0];
  return [d.name];
}

function cams(rows) {
  const box = el("div", { class: "cams" });
  for (const r of rows.filter(isFace)) {
    for (const name of camsOf(r)) {
      const png = r.gradcam && r.gradcam[name];
      if (!png) continue;
      const where = (r.frame !== null ? `frame ${r.frame}, ` : "") + `face ${r.face}`;
      box.append(el("figure", { "data-face": r.face, "data-detector": name },
        el("img", { src: `data:image/png;base64,${png}`, alt: `Grad-CAM of ${name}, ${where}` }),
        el("figcaption", { text: `${where}: Grad-CAM of ${name}` +
          (r.fired || $("camof").value !== "fired" ? "" : " (none fired: the one closest to its threshold)") })));
    }
  }
  return box;
}

function rerenderAll() {
  for (const item of state.results) if (item.state !== "pending") render(item);
}

// ------------------------------------------------------------------------------------------------ downloads
function download(name, type, text) {
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

function allRows() {
  return state.results.filter((r) => r.json).flatMap((r) => r.json.rows.map((row) => {
    const { gradcam, file, ...rest } = row;
    return rest;
  }));
}

function allCsv() {
  const texts = state.results.filter((r) => r.json).map((r) => r.json.csv.replace(/\n$/, "").split("\n"));
  if (!texts.length) return "";
  return [texts[0][0], ...texts.flatMap((t) => t.slice(1))].join("\n") + "\n";
}

// ------------------------------------------------------------------------------------------------ wiring
function init() {
  const drop = $("drop");
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => addFiles([...e.dataTransfer.files]));
  $("pick").addEventListener("change", (e) => { addFiles([...e.target.files]); e.target.value = ""; });
  $("gradcam").addEventListener("change", () => {
    if ($("gradcam").checked) {
      for (const item of state.results) if (item.state === "done" && !item.cams) enqueue(item, true);
    }
    rerenderAll();
    setStatus();
  });
  $("camof").addEventListener("change", rerenderAll);
  $("dl-json").addEventListener("click", () =>
    download("deepfake-detect.json", "application/json", JSON.stringify(allRows(), null, 1) + "\n"));
  $("dl-csv").addEventListener("click", () => download("deepfake-detect.csv", "text/csv", allCsv()));
  loadDetectors().catch((err) => { $("status").textContent = `cannot load the detectors: ${err}`; });
}

document.addEventListener("DOMContentLoaded", init);
