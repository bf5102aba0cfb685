// The explorer page: plain JavaScript, no libraries. Every number shown comes from the
// server's JSON API (tinygpt/explore/server.py), which calls the same Python model code
// as the command line.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, attention: null, attentionLayout: null };

// ---------------------------------------------------------------- talking to the server

async function api(path, body) {
  const options = body === undefined ? {} :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// Only the answer to the newest request of each kind is drawn; older ones that arrive late are dropped.
const counters = {};
async function latest(kind, path, body, draw, errorBox) {
  const mine = (counters[kind] = (counters[kind] || 0) + 1);
  try {
    const data = await api(path, body);
    if (mine === counters[kind]) draw(data);
  } catch (err) {
    if (mine === counters[kind] && errorBox) errorBox.innerHTML = `<span class="error">${escapeHtml(err.message)}</span>`;
  }
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// Spaces and newlines made visible, so that " the" and "the" look different.
function visible(text) {
  return text.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
}

function chip(token, index) {
  const el = document.createElement("span");
  el.className = "chip";
  el.dataset.index = index;
  el.innerHTML = `<span class="t">${escapeHtml(visible(token.text))}</span><span class="id">${token.id}</span>`;
  return el;
}

function sampling() {
  const topK = parseInt($("top-k").value, 10);
  const topP = parseFloat($("top-p").value);
  return { temperature: parseFloat($("temperature").value),
           top_k: Number.isFinite(topK) && topK > 0 ? topK : null,
           top_p: topP < 1 ? topP : null };
}

// ---------------------------------------------------------------- tokens

function drawTokens(data) {
  const box = $("tokens");
  box.replaceChildren(...data.tokens.map(chip));
  const n = data.tokens.length;
  $("prompt-note").textContent = `${n} token${n === 1 ? "" : "s"} of a context of ${state.info.block_size}` +
    (data.truncated ? " (longer than the context: the model sees the last " + state.info.block_size + ")" : "") +
    (data.skipped ? `; not in the model's alphabet, left out: ${data.skipped}` : "");
}

// ---------------------------------------------------------------- next token

function drawNext(data) {
  const box = $("candidates");
  const rows = [`<div class="head">token</div><div class="head">probability</div>` +
                `<div class="head num">p</div><div class="head num">after</div>`];
  const top = Math.max(...data.candidates.map((c) => Math.max(c.p, c.p_after)), 1e-12);
  for (const [i, c] of data.candidates.entries()) {
    rows.push(`<div class="cand${c.kept ? "" : " cut"}" data-i="${i}" title="id ${c.id}">` +
      `<div class="tok">${escapeHtml(visible(c.text))}</div>` +
      `<div class="bars"><div class="before" style="width:${(100 * c.p / top).toFixed(2)}%"></div>` +
      `<div class="after" style="width:${(100 * c.p_after / top).toFixed(2)}%"></div></div>` +
      `<div class="num">${(100 * c.p).toFixed(1)}%</div><div class="num">${(100 * c.p_after).toFixed(1)}%</div></div>`);
  }
  box.innerHTML = rows.join("");
  box.querySelectorAll(".cand").forEach((el) => {
    el.addEventListener("click", () => appendText(data.candidates[+el.dataset.i].text));
  });
  $("kept").textContent = `sampling keeps ${data.kept_count} of ${state.info.vocab_size} tokens, ` +
    `which hold ${(100 * data.kept_mass).toFixed(1)}% of the model's probability; struck-out tokens are cut`;
}

function refreshNext(prompt) {
  latest("next", "/api/next", { text: prompt, show: 15, ...sampling() }, drawNext, $("candidates"));
}

function appendText(text) {
  $("prompt").value += text;
  refreshAll();
}

let generation = null;
async function generate() {
  const prompt = $("prompt").value;
  if (!prompt) return;
  const controller = new AbortController();
  generation = controller;
  $("generate").disabled = true;
  $("stop").disabled = false;
  $("gen-status").textContent = "sampling…";
  const body = { text: prompt, max_new_tokens: parseInt($("max-new").value, 10) || 40, ...sampling() };
  let count = 0;
  try {
    const response = await fetch("/api/generate", { method: "POST", headers: { "Content-Type": "application/json" },
                                                      body: JSON.stringify(body), signal: controller.signal });
    if (!response.ok) throw new Error((await response.json()).error);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = pending.indexOf("\n")) >= 0) {
        const item = JSON.parse(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
        if (item.error) throw new Error(item.error);
        if (item.text) $("prompt").value += item.text;
        if (!item.done) count += 1;
        $("gen-status").textContent = `${count} token${count === 1 ? "" : "s"}`;
      }
    }
    $("gen-status").textContent = `${count} tokens sampled`;
  } catch (err) {
    $("gen-status").textContent = err.name === "AbortError" ? `stopped after ${count} tokens` : `error: ${err.message}`;
  } finally {
    generation = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
    refreshAll();
  }
}

// ---------------------------------------------------------------- attention

// The heatmap's geometry. Every (query, key) cell is a square of `cell` pixels, at least one,
// so every cell can be pointed at; the canvas grows (and scrolls) when the context is longer
// than the panel is wide. Token labels go on every `step`-th row and column, step the smallest
// of 1, 2, 5, 10, 20, 50, ... that keeps labels ATT_PITCH pixels apart, so they never overlap.
const ATT_WIDTH = 480;                  // px: the canvas's width when the context fits in it
const ATT_FONT = 11;                    // px: the axis labels' font size
const ATT_PITCH = ATT_FONT + 3;         // px: the least distance between two labels
const ATT_LEGEND = 48;                  // px below the map: the colour scale
const ATT_STEPS = [1, 2, 5];            // times powers of ten

function labelStep(cell) {
  for (let scale = 1; ; scale *= 10) {
    for (const m of ATT_STEPS) if (m * scale * cell >= ATT_PITCH) return m * scale;
  }
}

// names: the token texts; measure(text): its width in pixels at ATT_FONT.
// The label margin depends on which labels are drawn, which depends on the cell size, which
// depends on the margin: step only grows from one pass to the next, so this ends, and the
// result is consistent (step * cell >= ATT_PITCH with the margin of the labels drawn).
function attentionLayout(T, names, measure) {
  let step = 1, margin, cell;
  for (;;) {
    const text = (i) => (step > 1 ? `${i} ${names[i]}` : names[i]);   // thinned: say which token
    let widest = 0;
    for (let i = 0; i < T; i += step) widest = Math.max(widest, measure(text(i)));
    margin = Math.ceil(widest) + 10;
    cell = Math.max(1, Math.floor((ATT_WIDTH - margin - 4) / T));
    const needed = labelStep(cell);
    if (needed <= step) {
      const labels = [];
      for (let i = 0; i < T; i += step) labels.push({ index: i, text: text(i) });
      const size = cell * T;
      return { T, cell, step, margin, size, labels,
               width: Math.max(ATT_WIDTH, margin + size + 4), height: margin + size + 12 + ATT_LEGEND,
               legend: { x: margin, y: margin + size + 12, w: 160, h: 10 } };
    }
    step = needed;
  }
}

// The (query i, key j) under canvas pixel (x, y), or null off the map: the exact inverse of
// where drawAttention puts cell (i, j), whatever labels are shown.
function cellAt(layout, x, y) {
  const j = Math.floor((x - layout.margin) / layout.cell), i = Math.floor((y - layout.margin) / layout.cell);
  return i >= 0 && j >= 0 && i < layout.T && j < layout.T ? { i, j } : null;
}

// One colour scale for the cells and the legend: white (weight 0) to blue (weight 1).
function weightColour(w) {
  return [Math.round(255 * (1 - w)), Math.round(255 - 170 * w), 255];
}
const MASKED = [0xec, 0xee, 0xf2];       // the future: masked, weight exactly 0

function drawAttention(data) {
  state.attention = data;
  const canvas = $("att-canvas");
  const ctx = canvas.getContext("2d");
  const T = data.weights.length;
  const font = `${ATT_FONT}px ui-monospace, monospace`;
  ctx.font = font;
  const names = data.tokens.map((t) => visible(t.text).slice(0, 10));
  const layout = (state.attentionLayout = attentionLayout(T, names, (text) => ctx.measureText(text).width));
  const { cell, margin, size } = layout;
  canvas.width = layout.width;                       // resizing clears the canvas and its settings
  canvas.height = layout.height;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);

  // the cells, written as pixels: a 1024-token context is a million cells
  const image = ctx.createImageData(size, size);
  const px = image.data;
  for (let i = 0; i < T; i++) {
    const row = data.weights[i];
    for (let j = 0; j < T; j++) {
      const rgb = j > i ? MASKED : weightColour(row[j] || 0);
      for (let y = i * cell; y < (i + 1) * cell; y++) {
        let o = 4 * (y * size + j * cell);
        for (let x = 0; x < cell; x++, o += 4) {
          px[o] = rgb[0]; px[o + 1] = rgb[1]; px[o + 2] = rgb[2]; px[o + 3] = 255;
        }
      }
    }
  }
  ctx.putImageData(image, margin, margin);

  // the labels that fit: queries down the left, keys across the top, each with a tick
  ctx.fillStyle = "#1d2330";
  ctx.strokeStyle = "#1d2330";
  ctx.font = font;
  ctx.textBaseline = "middle";
  for (const { index, text } of layout.labels) {
    const centre = margin + (index + 0.5) * cell;
    ctx.textAlign = "right";
    ctx.fillText(text, margin - 5, centre);
    ctx.beginPath(); ctx.moveTo(margin - 3, centre); ctx.lineTo(margin, centre); ctx.stroke();
    ctx.save();
    ctx.translate(centre, margin - 5);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left";
    ctx.fillText(text, 0, 0);
    ctx.restore();
    ctx.beginPath(); ctx.moveTo(centre, margin - 3); ctx.lineTo(centre, margin); ctx.stroke();
  }

  // the colour scale, from 0 to 1: row 0 is always all on token 0 (weight 1), so no map is paler
  const { x: lx, y: ly, w: lw, h: lh } = layout.legend;
  for (let k = 0; k < lw; k++) {
    const rgb = weightColour(k / (lw - 1));
    ctx.fillStyle = `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
    ctx.fillRect(lx + k, ly, 1, lh);
  }
  ctx.strokeStyle = "#98a2b3";
  ctx.strokeRect(lx - 0.5, ly - 0.5, lw + 1, lh + 1);
  ctx.fillStyle = "#667085";
  ctx.font = "10px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.textAlign = "center";
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    const x = lx + t * (lw - 1) + 0.5;
    ctx.beginPath(); ctx.moveTo(x, ly + lh); ctx.lineTo(x, ly + lh + 3); ctx.stroke();
    ctx.fillText(String(t), x, ly + lh + 5);
  }
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  ctx.fillText("attention weight", lx + lw + 10, ly + lh / 2);
  ctx.fillStyle = `rgb(${MASKED.join(", ")})`;
  ctx.fillRect(lx + lw + 10, ly + lh + 6, 12, 10);
  ctx.fillStyle = "#667085";
  ctx.fillText("masked (the future)", lx + lw + 26, ly + lh + 11);

  // for the tests and the hover readout
  Object.assign(canvas.dataset, { label: margin, cell, step: layout.step, labels: layout.labels.length,
                                  legend: [lx, ly, lw, lh].join(",") });
  const box = $("att-tokens");
  box.replaceChildren(...data.tokens.map(chip));
  box.querySelectorAll(".chip").forEach((el) => {
    el.addEventListener("mouseenter", () => shadeAttention(+el.dataset.index));
    el.addEventListener("mouseleave", () => shadeAttention(-1));
  });
}

function shadeAttention(query) {
  const chips = $("att-tokens").querySelectorAll(".chip");
  chips.forEach((el, j) => {
    el.classList.toggle("focus", j === query);
    if (query < 0) { el.style.background = ""; el.title = ""; return; }
    const w = j <= query ? state.attention.weights[query][j] : 0;
    el.style.background = j <= query ? `rgba(47, 111, 219, ${w.toFixed(3)})` : "#f3f3f3";
    el.title = j <= query ? `attention from token ${query}: ${(100 * w).toFixed(1)}%` : "the future: not visible";
  });
}

function attentionCell(event) {
  const canvas = $("att-canvas");
  if (!state.attention || !state.attentionLayout) return;
  const rect = canvas.getBoundingClientRect();
  const scale = canvas.width / rect.width;           // 1 unless the page is zoomed
  const at = cellAt(state.attentionLayout, (event.clientX - rect.left) * scale, (event.clientY - rect.top) * scale);
  if (!at) { $("att-cell").textContent = ""; return; }
  const { i, j } = at;
  const tok = state.attention.tokens;
  $("att-cell").textContent = `token ${i} ${JSON.stringify(tok[i].text)} → token ${j} ${JSON.stringify(tok[j].text)}: ` +
    (j > i ? "masked (future)" : `${(100 * state.attention.weights[i][j]).toFixed(2)}%`);
}

function refreshAttention(prompt) {
  latest("attention", "/api/attention", { text: prompt, layer: +$("layer").value, head: +$("head").value },
         drawAttention, $("att-cell"));
}

// ---------------------------------------------------------------- gradients

function drawGradients(data) {
  // a diverged model sends null for what is not a finite number
  const loss = data.loss === null ? "not finite" : data.loss.toFixed(4);
  data.saliency = data.saliency.map((v) => v || 0);
  $("grad-loss").textContent = `loss L = ${loss} (mean cross-entropy of predicting tokens 1…${data.tokens.length - 1} ` +
    `from the ones before), then one backward pass through every kernel`;
  // One chip per prompt token, wrapping onto as many lines as it takes. Input t's embedding
  // reaches the predictions at positions t…T-2; the last token is only ever a target.
  const top = Math.max(...data.saliency, 1e-30);
  const T = data.tokens.length;
  const chips = data.tokens.map((t, i) => {
    if (i === T - 1) {
      const el = chip({ text: t.text, id: "target" }, i);
      el.classList.add("target");
      el.title = "only a target: no input embedding, so no gradient";
      return el;
    }
    const el = chip({ text: t.text, id: data.saliency[i].toExponential(1) }, i);
    el.style.background = `rgba(230, 120, 30, ${(data.saliency[i] / top).toFixed(3)})`;
    el.title = `‖∂L/∂e_${i}‖ = ${data.saliency[i].toExponential(3)}; ` +
      `e_${i} reaches ${T - 1 - i} of the ${T - 1} predictions`;
    return el;
  });
  $("saliency-note").textContent = `The last token, ${JSON.stringify(data.tokens[T - 1].text)}, has no value: the loss ` +
    `predicts tokens 1…${T - 1} from tokens 0…${T - 2}, so it is only a target, never an input. Fed in as well, its ` +
    `gradient would be exactly 0: the causal mask lets it reach only its own position's prediction, and the prompt ` +
    `holds no next token to score that by.`;
  $("saliency").replaceChildren(...chips);
  const groups = [];
  for (const layer of data.layers) for (const g of Object.keys(layer.groups)) if (!groups.includes(g)) groups.push(g);
  const all = data.layers.flatMap((l) => Object.values(l.groups)).filter((v) => v > 0);
  if (!all.length) all.push(1);
  const logMax = Math.log10(Math.max(...all)), logMin = Math.log10(Math.min(...all));
  const head = `<tr><th></th>${groups.map((g) => `<th>${escapeHtml(g).replace(".", ".<br>")}</th>`).join("")}</tr>`;
  const rows = data.layers.map((layer) => `<tr><th>${escapeHtml(layer.name)}</th>` + groups.map((g) => {
    const v = layer.groups[g];
    if (v === undefined) return `<td class="empty"></td>`;
    if (v === null) return `<td>not finite</td>`;
    const a = v > 0 && logMax > logMin ? (Math.log10(v) - logMin) / (logMax - logMin) : 0;
    return `<td style="background: rgba(47, 111, 219, ${(0.05 + 0.6 * a).toFixed(3)})">${v.toExponential(1)}</td>`;
  }).join("") + "</tr>");
  $("grad-table").innerHTML = head + rows.join("");
}

function refreshGradients(prompt) {
  latest("gradients", "/api/gradients", { text: prompt }, drawGradients, $("grad-loss"));
}

// ---------------------------------------------------------------- training curves

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-12 * Math.abs(hi); t += step) ticks.push(t);
  return ticks;
}

function lineChart(canvas, series, xlabel, ylabel) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, left = 62, right = 12, top = 10, bottom = 36;
  ctx.clearRect(0, 0, W, H);
  const points = series.flatMap((s) => s.points);
  if (!points.length) return;
  let [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...points.map((p) => p[1])), Math.max(...points.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 + 1e-12; y1 += Math.abs(y1) * 0.1 + 1e-12; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const X = (x) => left + (W - left - right) * (x - x0) / (x1 - x0);
  const Y = (y) => top + (H - top - bottom) * (1 - (y - y0) / (y1 - y0));
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#667085";
  ctx.strokeStyle = "#e4e7ec";
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const t of niceTicks(y0, y1, 4)) {
    ctx.beginPath(); ctx.moveTo(left, Y(t)); ctx.lineTo(W - right, Y(t)); ctx.stroke();
    ctx.fillText(Math.abs(t) < 1e-2 && t !== 0 ? t.toExponential(0) : +t.toPrecision(3), left - 4, Y(t));
  }
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const t of niceTicks(x0, x1, 6)) ctx.fillText(t, X(t), H - bottom + 4);
  ctx.fillText(xlabel, left + (W - left - right) / 2, H - 14);
  ctx.save(); ctx.translate(12, top + (H - top - bottom) / 2); ctx.rotate(-Math.PI / 2);
  ctx.fillText(ylabel, 0, -6); ctx.restore();
  let legendY = top + 4;
  for (const s of series) {
    if (!s.points.length) continue;
    ctx.strokeStyle = s.color; ctx.fillStyle = s.color; ctx.lineWidth = s.width || 1.5;
    ctx.globalAlpha = s.alpha || 1;
    ctx.beginPath();
    s.points.forEach((p, i) => (i ? ctx.lineTo(X(p[0]), Y(p[1])) : ctx.moveTo(X(p[0]), Y(p[1]))));
    ctx.stroke();
    if (s.dots) for (const p of s.points) { ctx.beginPath(); ctx.arc(X(p[0]), Y(p[1]), 3, 0, 2 * Math.PI); ctx.fill(); }
    ctx.globalAlpha = 1;
    ctx.textAlign = "right"; ctx.textBaseline = "top";
    ctx.fillText(s.name, W - right - 4, legendY);
    legendY += 14;
  }
  ctx.lineWidth = 1;
}

function drawTraining(data) {
  if (!data.available) {
    $("train-status").textContent = "no training log in this checkpoint's run folder (pretrained weights, or a run not started yet)";
    return;
  }
  // a loss the server sent as null (not finite: a diverged run) reads "–", as a missing one does
  const loss = (row, i) => (row && Number.isFinite(row[i]) ? row[i].toFixed(4) : "–");
  const last = data.train[data.train.length - 1];
  const val = loss(data.eval[data.eval.length - 1], 2);
  $("train-status").textContent = `step ${last ? last[0] : 0}: train loss ${loss(last, 1)}, last val loss ${val}`;
  lineChart($("loss-canvas"), [
    { name: "train (each step)", color: "#2f6fdb", alpha: 0.35, width: 1, points: data.train },
    { name: "train (eval)", color: "#2f6fdb", dots: true, points: data.eval.map((e) => [e[0], e[1]]) },
    { name: "val (eval)", color: "#e07b00", dots: true, points: data.eval.map((e) => [e[0], e[2]]) },
  ], "step", "loss (nats/token)");
  lineChart($("lr-canvas"), [{ name: "learning rate", color: "#2a9d4b", points: data.lr }], "step", "lr");
}

function refreshTraining() { latest("training", "/api/training", undefined, drawTraining, $("train-status")); }

// ---------------------------------------------------------------- wiring

let timer = null;
function refreshAll() {
  const prompt = $("prompt").value;
  latest("tokens", "/api/tokens", { text: prompt }, drawTokens, $("prompt-note"));
  if (!prompt) return;
  refreshNext(prompt);
  refreshAttention(prompt);
  refreshGradients(prompt);
}

function soon() { clearTimeout(timer); timer = setTimeout(refreshAll, 200); }

async function start() {
  const info = (state.info = await api("/api/info"));
  $("model-info").textContent = `${info.source} · ${info.n_layer} layers, ${info.n_head} heads, width ${info.n_embd}, ` +
    `context ${info.block_size}, ${info.tokenizer === "char" ? "characters" : "GPT-2 BPE"} (${info.vocab_size} tokens), ` +
    `${info.parameters.toLocaleString()} parameters`;
  for (let i = 0; i < info.n_layer; i++) $("layer").add(new Option(String(i), i));
  for (let h = 0; h < info.n_head; h++) $("head").add(new Option(String(h), h));
  $("prompt").addEventListener("input", soon);
  $("temperature").addEventListener("input", () => {
    $("temperature-value").textContent = (+$("temperature").value).toFixed(2);
    refreshNext($("prompt").value);
  });
  $("top-p").addEventListener("input", () => {
    const p = +$("top-p").value;
    $("top-p-value").textContent = p < 1 ? p.toFixed(2) : "off";
    refreshNext($("prompt").value);
  });
  $("top-k").addEventListener("input", () => refreshNext($("prompt").value));
  $("layer").addEventListener("change", () => refreshAttention($("prompt").value));
  $("head").addEventListener("change", () => refreshAttention($("prompt").value));
  $("att-canvas").addEventListener("mousemove", attentionCell);
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", () => generation && generation.abort());
  refreshAll();
  refreshTraining();
  setInterval(refreshTraining, 5000);
}

start().catch((err) => { $("model-info").innerHTML = `<span class="error">${escapeHtml(err.message)}</span>`; });
