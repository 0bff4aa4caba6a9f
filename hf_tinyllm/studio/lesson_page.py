"""The lesson page of `studio.export`: one HTML document holding its style, the inlined plotly.js, the lesson's
numbers as JSON and plain JavaScript that lays them out. Nothing in it points outside the file: no links, no fonts,
no images to fetch. The timeline bar (a slider over the recorded steps and a play button) redraws every figure at
the chosen step with `Plotly.react`; `window.lesson.showStep(i)` does the same and returns a promise."""

import html
import json

STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0;
       color: #1f2328; background: #f6f7f9; }
header.top { position: sticky; top: 0; z-index: 10; background: #ffffff; border-bottom: 1px solid #d0d7de;
             padding: 10px 24px; }
header.top h1 { font-size: 20px; margin: 0 0 4px 0; }
header.top nav a { margin-right: 14px; color: #0969da; text-decoration: none; font-size: 14px; }
.timeline { display: flex; align-items: center; gap: 12px; margin-top: 8px; }
.timeline input[type=range] { flex: 1; }
.timeline button { font-size: 14px; padding: 4px 12px; min-width: 92px; }
#step-label { font-variant-numeric: tabular-nums; min-width: 150px; font-weight: 600; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 24px 40px 24px; }
section { background: #ffffff; border: 1px solid #d0d7de; border-radius: 8px; margin: 16px 0; padding: 12px 16px; }
section h2 { font-size: 18px; margin: 4px 0 6px 0; }
p.lead { margin: 0 0 8px 0; color: #57606a; font-size: 14px; }
.note { color: #57606a; font-size: 14px; margin: 4px 0 0 0; }
.controls { display: flex; flex-wrap: wrap; gap: 16px; align-items: center; margin: 6px 0; font-size: 14px; }
.status { font-size: 14px; margin: 6px 0; min-height: 1.2em; }
.row { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.row.wide { grid-template-columns: 3fr 1fr; }
.plot { min-height: 200px; }
#layers-attention-note { align-self: center; }
h3.analogy { font-size: 15px; margin: 40px 0 4px 0; }
h3.truth { font-size: 15px; margin: 18px 0 2px 0; }
table { border-collapse: collapse; font-size: 14px; margin-top: 6px; }
th, td { border-bottom: 1px solid #d0d7de; padding: 3px 12px; text-align: left; }
.generated p { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 14px;
               background: #f6f8fa; padding: 6px 10px; border-radius: 6px; margin: 6px 0; white-space: pre-wrap; }
.problem { color: #b42318; }
@media (max-width: 900px) { .row, .row.wide { grid-template-columns: 1fr; } }
"""

BODY = """
<header class="top">
  <h1>TinyLLM lesson: <code>{model}</code></h1>
  <nav><a href="#be">Be the model</a><a href="#layers">Through the layers</a><a href="#geometry">Geometry</a>
  <a href="#learning">How it learned</a><a href="#generate">Generate</a></nav>
  <div class="timeline" id="timeline">
    <button id="play" type="button">&#9654; Play</button>
    <input id="step-slider" type="range" min="0" step="1" aria-label="training step">
    <span id="step-label"></span>
  </div>
  <p class="note" id="timeline-note"></p>
</header>
<main>
<section id="be">
  <h2>Be the model</h2>
  <p class="lead">What the model thinks comes next: its ten most likely next tokens after the prompt, and the entropy
  of its whole distribution (bits: 0 = certain). Move the slider to see the guesses sharpen as it learns.</p>
  <div class="controls"><label>Prompt <select id="be-prompt"></select></label></div>
  <div id="be-chart" class="plot"></div>
  <div class="status" id="be-status"></div>
  <h3 class="truth">The truth beside the model</h3>
  <p class="lead">TinyWorld's generator knows the exact probability of every next word. Its distribution after the
  prompt, beside the model's: the true entropy is what no model can avoid, and the gap between the two (the KL
  divergence, in bits) is what the model has left to learn here.</p>
  <table id="be-truth"></table>
  <div class="status" id="be-truth-status"></div>
  <h3 class="truth">Word by word</h3>
  <p class="lead">Along one TinyWorld text: the model's surprise at each word beside the truth's, and the true
  entropy (red), the floor no model can go below on average. Move the slider: the blue bars fall towards the red
  marks, and where they stay above, the model has not learned that rule yet.</p>
  <div id="be-along" class="plot"></div>
  <div class="status" id="be-along-status"></div>
</section>
<section id="layers">
  <h2>Through the layers</h2>
  <p class="lead">The logit lens decodes the residual stream after each layer with the model's own head, as if the
  network stopped there: each cell is the top next token after that input token, coloured by its probability. The
  attention map shows where one head looks (row = query token, column = key token).</p>
  <div class="controls"><label>Prompt <select id="layers-prompt"></select></label>
    <label>Layer <select id="layers-layer"></select></label><label>Head <select id="layers-head"></select></label></div>
  <div class="status" id="layers-status"></div>
  <div id="layers-lens" class="plot"></div>
  <div class="row"><div id="layers-attention" class="plot"></div>
    <div class="note" id="layers-attention-note"></div></div>
</section>
<section id="geometry">
  <h2>Geometry</h2>
  <p class="lead">Word vectors (the input embedding) on a 2-D PCA, each step aligned to the last (Procrustes) on
  fixed axes, so the words move instead of jumping. Grey arrows go from male to female words: when they turn
  parallel, the model has one direction for gender.</p>
  <div class="status" id="geometry-status"></div>
  <div class="row wide"><div id="geometry-map" class="plot"></div>
    <div><h3 id="analogy-title" class="analogy"></h3><table id="analogy-table"></table></div></div>
</section>
<section id="learning">
  <h2>How it learned</h2>
  <p class="lead">The run's learning curves; the dashed vertical line is the step the slider shows.</p>
  <div class="status" id="learning-status"></div>
  <div class="row"><div id="learning-loss" class="plot"></div><div id="learning-memory" class="plot"></div></div>
  <div class="row"><div id="learning-geometry" class="plot"></div><div id="learning-updates" class="plot"></div></div>
</section>
<section id="generate">
  <h2>Generate</h2>
  <p class="lead">The model's greedy continuation (always the most likely next token) of a few prompts.</p>
  <div class="generated" id="generate-output"></div>
</section>
</main>
"""

SCRIPT = r"""
(function () {
"use strict";
const DATA = JSON.parse(document.getElementById("lesson-data").textContent);
const CONFIG = {displaylogo: false, responsive: true};
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
const BLUES = [[0, "#f7fbff"], [0.25, "#c6dbef"], [0.5, "#6baed6"], [0.75, "#2171b5"], [1, "#08306b"]];
const LAST = DATA.steps.length - 1;
let index = LAST;
let drawn = 0;
let timer = null;

const $ = (id) => document.getElementById(id);
const at = (list) => list[list.length === 1 ? 0 : index];
const quote = (token) => "'" + token.replace(/\n/g, "\\n") + "'";
const label = (token) => token.replace(/\n/g, "\\n").replace(/ /g, "\u00b7") || "\u2205";
const percent = (p) => (100 * p).toFixed(1) + "%";
const signed = (x) => (x >= 0 ? "+" : "") + x.toFixed(3);
const gapText = (bits) => bits === null ? "infinitely far (it gives a possible word probability 0)" :
  bits.toFixed(3) + " bits";
const stepName = () => DATA.steps[index] === null ? "the final model" : "step " + DATA.steps[index];

function layout(extra) {
  return Object.assign({template: DATA.template, margin: {l: 10, r: 10, t: 40, b: 10}}, extra);
}

function say(id, text) {
  $(id).textContent = text;
  $(id).classList.remove("problem");
}

function problem(id, plots, text) {
  $(id).textContent = "Problem: " + text;
  $(id).classList.add("problem");
  plots.forEach((plot) => Plotly.purge($(plot)));
  return Promise.resolve();
}

function fill(select, values, labels) {
  values.forEach((value, i) => select.add(new Option(labels ? labels[i] : value, value)));
}

function drawBe() {
  const prompt = $("be-prompt").value;
  const view = at(DATA.model_views).be[prompt];
  if (view.problem) return problem("be-status", ["be-chart"], view.problem);
  const order = view.tokens.map((_, i) => i).reverse();
  const trace = {type: "bar", orientation: "h", marker: {color: "#3b75af"},
    x: order.map((i) => 100 * view.probabilities[i]), y: order,
    text: order.map((i) => percent(view.probabilities[i])), textposition: "outside", cliponaxis: false,
    hovertemplate: "%{x:.2f}%<extra></extra>"};
  say("be-status", "After '" + prompt + "' at " + stepName() + ": entropy " +
    view.entropy_bits.toFixed(2) + " bits over " + view.vocab_size + " tokens; the top token " +
    quote(view.tokens[0]) + " has " + percent(view.probabilities[0]) + ".");
  return Plotly.react("be-chart", [trace], layout({
    title: {text: "next token after '" + prompt + "' at " + stepName() + " (" + view.entropy_bits.toFixed(2) +
      " bits)"},
    height: 380, xaxis: {title: {text: "probability (%)"}, range: [0, 112]},
    yaxis: {tickmode: "array", tickvals: order, ticktext: order.map((i) => quote(view.tokens[i])), automargin: true},
    margin: {l: 10, r: 20, t: 40, b: 40}}), CONFIG);
}

function drawTruth() {
  const prompt = $("be-prompt").value;
  const view = at(DATA.model_views).truth[prompt];
  const table = $("be-truth");
  table.replaceChildren();
  if (view.problem) return problem("be-truth-status", [], view.problem);
  const head = table.insertRow();
  ["next word", "the truth", "the model"].forEach((name) => {
    head.appendChild(document.createElement("th")).textContent = name;
  });
  view.words.forEach((word, i) => {
    const row = table.insertRow();
    [word, percent(view.truth[i]), percent(view.model[i])].forEach((text) => { row.insertCell().textContent = text; });
  });
  say("be-truth-status", "The truth (" + DATA.truth_source + ") after '" + prompt + "': " +
    view.entropy_bits.toFixed(2) + " bits of true entropy over " + view.true_words + " possible words; at " +
    stepName() + " the model is " + gapText(view.gap_bits) + " from it (KL): what it has left to learn here.");
  return Promise.resolve();
}

function drawAlong() {
  const view = at(DATA.model_views).along;
  if (view.problem) return problem("be-along-status", ["be-along"], view.problem);
  const labels = view.word.map((word, i) => i + ":" + word);
  const sum = (list) => list.reduce((total, x) => total + x, 0);
  const traces = [
    {type: "bar", name: "the model's surprise", x: labels, y: view.model_surprise_bits, marker: {color: "#3b75af"},
      customdata: view.gap_bits, hovertemplate: "%{x}: %{y:.3f} bits (KL gap %{customdata:.3f})<extra></extra>"},
    {type: "bar", name: "the truth's surprise", x: labels, y: view.true_surprise_bits, marker: {color: "#bbbbbb"}},
    {type: "scatter", mode: "markers", name: "true entropy (the floor)", x: labels, y: view.entropy_bits,
      marker: {symbol: "line-ew-open", size: 22, color: "#d62728", line: {width: 3}}}];
  const finite = view.gap_bits.every((gap) => gap !== null);
  const worst = finite ? view.gap_bits.indexOf(Math.max(...view.gap_bits)) : view.gap_bits.indexOf(null);
  say("be-along-status", "'" + DATA.along_text + "' at " + stepName() + ": " + labels.length + " words, " +
    sum(view.entropy_bits).toFixed(2) + " bits of true entropy; the model's surprise " +
    (finite ? sum(view.model_surprise_bits).toFixed(2) + " bits" : "infinite") + "; the gap to the truth (KL, " +
    "summed) " + (finite ? sum(view.gap_bits).toFixed(3) + " bits" : "infinite") + ", most of it at '" +
    view.word[worst] + "' (" + gapText(view.gap_bits[worst]) + ").");
  return Plotly.react("be-along", traces, layout({title: {text: "word by word: surprise against the truth at " +
    stepName() + " (bits)"}, barmode: "group", height: 360, yaxis: {title: {text: "bits"}},
    xaxis: {tickangle: -30, automargin: true}, legend: {orientation: "h", y: -0.3}}), CONFIG);
}

function drawLayers() {
  const prompt = $("layers-prompt").value;
  const view = at(DATA.model_views).layers[prompt];
  if (view.problem) return problem("layers-status", ["layers-lens", "layers-attention"], view.problem);
  const positions = view.tokens.map((t, i) => i + ":" + label(t));
  const lens = {type: "heatmap", x: positions, y: view.layer_names, zmin: 0, zmax: 1, colorscale: BLUES,
    z: view.top_probabilities.map((layer) => layer.map((cell) => cell[0])),
    text: view.top_tokens.map((layer) => layer.map((cell) => label(cell[0]))), texttemplate: "%{text}",
    customdata: view.top_tokens.map((layer, l) => layer.map((cell, t) =>
      cell.map((token, k) => quote(token) + " " + percent(view.top_probabilities[l][t][k])).join("<br>"))),
    hovertemplate: "after %{x}, %{y}:<br>%{customdata}<extra></extra>", colorbar: {title: {text: "p"}}};
  const layer = Number($("layers-layer").value), head = Number($("layers-head").value);
  const attention = {type: "heatmap", x: positions, y: positions, z: view.attention[layer][head], zmin: 0, zmax: 1,
    colorscale: "Viridis", hovertemplate: "query %{y}<br>key %{x}<br>%{z:.3f}<extra></extra>"};
  say("layers-status", "At " + stepName() + " the final answer " + quote(view.final_token) +
    " has p = " + view.final_token_probabilities.map(percent).join(", ") + " after " +
    view.layer_names.join(", ") + ".");
  const row = view.attention[layer][head][view.tokens.length - 1];
  const strongest = row.indexOf(Math.max(...row));
  say("layers-attention-note", "In layer " + (layer + 1) + ", head " + (head + 1) + " the last token " +
    quote(view.tokens[view.tokens.length - 1]) + " looks most at " + quote(view.tokens[strongest]) + " (position " +
    strongest + ", weight " + row[strongest].toFixed(2) + "). Each row sums to 1: a token can only look back.");
  return Promise.all([
    Plotly.react("layers-lens", [lens], layout({title: {text: "logit lens at " + stepName()},
      height: 120 + 48 * view.layer_names.length, xaxis: {tickangle: -30, automargin: true},
      yaxis: {automargin: true}}), CONFIG),
    Plotly.react("layers-attention", [attention], layout({
      title: {text: "attention, layer " + (layer + 1) + " head " + (head + 1) + " at " + stepName()},
      height: 460, xaxis: {tickangle: -45, automargin: true}, yaxis: {autorange: "reversed", automargin: true}}),
      CONFIG)]);
}

function outward(points, xRange, yRange) {
  // Each label on the side of its point away from its group's centre (in axis fractions), so a cluster's labels
  // spread out instead of piling on one another.
  const sx = xRange[1] - xRange[0], sy = yRange[1] - yRange[0];
  const cx = points.reduce((sum, p) => sum + p[0], 0) / points.length;
  const cy = points.reduce((sum, p) => sum + p[1], 0) / points.length;
  return points.map(([x, y]) => {
    const dx = (x - cx) / sx, dy = (y - cy) / sy;
    if (Math.abs(dy) > Math.abs(dx)) return dy > 0 ? "top center" : "bottom center";
    return dx > 0 ? "middle right" : "middle left";
  });
}

function drawGeometry() {
  const g = DATA.geometry;
  if (g.problem) return problem("geometry-status", ["geometry-map"], g.problem);
  const now = at(g.steps);
  const xy = {};
  g.words.forEach((word, i) => { xy[word] = now.coords[i]; });
  const groups = [...new Set(g.groups)];
  const traces = groups.map((group, n) => {
    const members = g.words.filter((_, i) => g.groups[i] === group);
    return {type: "scatter", mode: "markers+text", name: group, text: members,
      x: members.map((w) => xy[w][0]), y: members.map((w) => xy[w][1]), marker: {color: COLORS[n % COLORS.length]},
      textfont: {color: COLORS[n % COLORS.length], size: 10},
      textposition: outward(members.map((w) => xy[w]), g.x_range, g.y_range)};
  });
  const arrows = g.pairs.map(([male, female]) => ({x: xy[female][0], y: xy[female][1], ax: xy[male][0],
    ay: xy[male][1], xref: "x", yref: "y", axref: "x", ayref: "y", showarrow: true, arrowhead: 2,
    arrowcolor: "grey", opacity: 0.6, text: ""}));
  const variance = now.explained_variance.map((v) => v === null ? "?" : (100 * v).toFixed(0) + "%").join(" + ");
  say("geometry-status", "Parallelism of the gender offsets at " + stepName() + ": " +
    signed(now.parallelism) + " (1 = one shared direction; random word pairs " + signed(g.parallelism_baseline) +
    "). " + g.words.length + " words" + (g.missing.length ? "; not in the vocabulary: " + g.missing.join(", ") : "") +
    ".");
  drawAnalogy(now.analogy);
  return Plotly.react("geometry-map", traces, layout({
    title: {text: "input embeddings at " + stepName() + " (2-D PCA, " + variance + " of the variance)"},
    height: 620, annotations: arrows, legend: {orientation: "h", y: -0.06},
    xaxis: {range: g.x_range, zeroline: false}, yaxis: {range: g.y_range, zeroline: false}}), CONFIG);
}

function drawAnalogy(result) {
  const [a, b, c] = DATA.analogy;
  const table = $("analogy-table");
  table.replaceChildren();
  if (result.problem) {
    $("analogy-title").textContent = "Analogy: " + result.problem;
    return;
  }
  $("analogy-title").textContent = a + " - " + b + " + " + c + " -> " + result[0][0] + "  (at " + stepName() + ")";
  const head = table.insertRow();
  ["rank", "word", "cosine"].forEach((name) => { head.appendChild(document.createElement("th")).textContent = name; });
  result.forEach(([word, cosine], i) => {
    const row = table.insertRow();
    [String(i + 1), word, signed(cosine)].forEach((text) => { row.insertCell().textContent = text; });
  });
}

function cursor() {
  const step = DATA.steps[index];
  return step === null ? [] : [{type: "line", xref: "x", yref: "paper", x0: step, x1: step, y0: 0, y1: 1,
    line: {color: "#d62728", width: 2, dash: "dash"}, name: "cursor"}];
}

function drawLearning() {
  const learning = DATA.learning;
  $("learning-status").textContent = learning.status.replace(/\*\*/g, "");
  return Promise.all(Object.entries(learning.figures).map(([name, figure]) => {
    if (figure === null) return Promise.resolve();
    const shapes = (figure.layout.shapes || []).concat(cursor());
    return Plotly.react("learning-" + name, figure.data, Object.assign({}, figure.layout, {template: DATA.template,
      shapes: shapes, height: 400, legend: {orientation: "h", x: 0, y: -0.22, yanchor: "top"}}), CONFIG);
  }));
}

function drawGenerate() {
  const texts = at(DATA.model_views).generate;
  const output = $("generate-output");
  output.replaceChildren();
  DATA.generate_prompts.forEach((prompt) => {
    const text = texts[prompt];
    const line = output.appendChild(document.createElement("p"));
    const rest = text.startsWith(prompt) ? text.slice(prompt.length) : text;
    line.appendChild(document.createElement("b")).textContent = text.startsWith(prompt) ? prompt : "";
    line.appendChild(document.createTextNode(rest));
  });
  return Promise.resolve();
}

function showStep(i) {
  index = Math.max(0, Math.min(LAST, Number(i)));
  $("step-slider").value = String(index);
  $("step-label").textContent = stepName() + (DATA.steps.length > 1 ? "  (" + (index + 1) + " of " +
    DATA.steps.length + ")" : "");
  const ticket = ++drawn;
  const views = [drawBe, drawTruth, drawAlong, drawLayers, drawGeometry, drawLearning, drawGenerate];
  return Promise.all(views.map((draw) => draw())).then(() => {
    if (ticket === drawn) document.body.dataset.step = String(index);
  });
}

function stop() {
  clearInterval(timer);
  timer = null;
  $("play").innerHTML = "&#9654; Play";
}

function play() {
  if (timer !== null) return stop();
  if (index === LAST) showStep(0);
  $("play").innerHTML = "&#10074;&#10074; Pause";
  timer = setInterval(() => { if (index >= LAST) stop(); else showStep(index + 1); }, 1200);
}

function start() {
  $("timeline-note").textContent = DATA.timeline.note;
  fill($("be-prompt"), DATA.prompts);
  fill($("layers-prompt"), DATA.prompts);
  const first = at(DATA.model_views).layers[DATA.prompts[0]];
  const layers = first.attention ? first.attention.length : 0, heads = layers ? first.attention[0].length : 0;
  fill($("layers-layer"), [...Array(layers).keys()], [...Array(layers).keys()].map((l) => String(l + 1)));
  fill($("layers-head"), [...Array(heads).keys()], [...Array(heads).keys()].map((h) => String(h + 1)));
  const slider = $("step-slider");
  slider.max = String(LAST);
  slider.addEventListener("input", () => { stop(); showStep(slider.value); });
  $("play").addEventListener("click", play);
  if (LAST === 0) { slider.disabled = true; $("play").disabled = true; }
  $("be-prompt").addEventListener("change", () => Promise.all([drawBe(), drawTruth()]));
  ["layers-prompt", "layers-layer", "layers-head"].forEach((id) => $(id).addEventListener("change", drawLayers));
  window.lesson = {data: DATA, showStep: showStep, play: play, stop: stop};
  return showStep(LAST);
}

start();
})();
"""


def _script_json(data: dict) -> str:
    """`data` as JSON that cannot end its `<script>` element early."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")


def render_page(data: dict, plotly_js: str) -> str:
    """The lesson page for `data` (`export.lesson_data`), with `plotly_js` (plotly.js itself) inlined."""
    model = html.escape(data["model"])
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>TinyLLM lesson: {model}</title>\n<style>{STYLE}</style>\n"
        f'<script type="text/javascript">{plotly_js}</script>\n</head>\n<body>\n'
        + BODY.replace("{model}", model)
        + f'<script type="application/json" id="lesson-data">{_script_json(data)}</script>\n'
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


__all__ = ["BODY", "SCRIPT", "STYLE", "render_page"]
