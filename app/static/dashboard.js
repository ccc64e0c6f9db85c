// The live dashboard: figures over Server-Sent Events (/api/state/stream), loads and reset over POST.
"use strict";

// What the page shows comes from the server (GET /api/scenarios: the registry in app/scenarios/__init__.py), and
// each scenario's figures arrive ready to show in every snapshot (snapshot.cards): nothing here names a scenario.
let SCENARIOS = [];
let VARIANTS = [];
let TALK = [];
let lastSnapshot = null;
let talkAt = -1; // talk mode: the step run last; -1: none yet (the first one is shown, → runs it)
let talkRun = null; // the load run the current step started (GET /api/load's "run")
const HISTORY = 120; // points: one minute at two snapshots a second
const history = {};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, val] of Object.entries(attrs)) {
    if (k === "class") node.className = val; else node.setAttribute(k, val);
  }
  for (const child of children) node.append(child);
  return node;
}

function buildColumns() {
  const before = document.getElementById("load");
  SCENARIOS.forEach((spec, i) => {
    const columns = el("div", { class: "columns" });
    const title = el("h2", {}, `${i + 1} · ${spec.title} `);
    if (spec.load) title.append(el("code", {}, `make load-${spec.name}`), " ");
    if (spec.ladder.length) {
      const ladder = el("button", { class: "ladder", "data-testid": `ladder-${spec.name}`,
        title: `broken, then ${spec.ladder.join(", then ")}, then fixed: the same load, side by side` }, "Run the ladder");
      ladder.addEventListener("click", () => startLoad(spec.name, "ladder"));
      title.append(ladder, " ");
    }
    title.append(el("span", { class: "source" }, spec.source));
    before.before(el("section", { class: "scenario", id: spec.name }, title, columns));
    for (const variant of VARIANTS) {
      const col = el("div", { class: `col ${variant}`, "data-variant": variant });
      const button = el("button", { "data-testid": `load-${spec.name}-${variant}` }, "Run load");
      button.addEventListener("click", () => startLoad(spec.name, variant));
      col.append(
        el("h3", {}, variant, button),
        el("div", { class: "failures", "data-testid": `failures-${spec.name}-${variant}` }, "–"),
        el("dl"),
        el("canvas", { width: 600, height: 46, title: spec.spark_label }),
        el("div", { class: "spark-label" }, `${spec.spark_label}, the last minute`),
      );
      columns.append(col);
      history[`${spec.name}-${variant}`] = [];
    }
  });
}

function render(snapshot) {
  lastSnapshot = snapshot;
  for (const spec of SCENARIOS) {
    for (const col of document.querySelectorAll(`#${spec.name} .col`)) {
      const card = (snapshot.cards[spec.name] || {})[col.dataset.variant];
      if (!card) continue;
      fillCard(col, spec, card);
      const points = history[`${spec.name}-${col.dataset.variant}`];
      points.push(card.spark);
      if (points.length > HISTORY) points.shift();
      spark(col.querySelector("canvas"), points, col.dataset.variant === "broken" ? "#ff5c5c" : "#3ddc84");
    }
  }
  renderTalk();
}

function fillCard(col, spec, card) {
  // A column's headline number and figures: on the scenario's card, and beside the code in talk mode.
  const box = col.querySelector(".failures");
  box.className = `failures ${card.failures ? "nonzero" : "zero"}`;
  box.replaceChildren(String(card.failures), el("small", {}, spec.failures_label));
  col.classList.toggle("failing", col.dataset.variant === "broken" && card.failures > 0);
  col.classList.toggle("holding", col.dataset.variant === "fixed" && card.failures === 0);
  const dl = col.querySelector("dl");
  dl.replaceChildren(...card.figures.flatMap(([k, val]) => [el("dt", {}, k), el("dd", {}, val)]));
}

function spark(canvas, points, color) {
  // The last minute, newest at the right edge; the scale is the largest value seen, written at the top left.
  if (canvas.clientWidth && canvas.width !== canvas.clientWidth) canvas.width = canvas.clientWidth; // crisp text
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const max = Math.max(1, ...points);
  const step = width / (HISTORY - 1);
  ctx.strokeStyle = color;
  ctx.lineWidth = 3;
  ctx.beginPath();
  points.forEach((p, i) => {
    const x = width - (points.length - 1 - i) * step;
    const y = height - 3 - (p / max) * (height - 6);
    if (i === 0) ctx.moveTo(x - (points.length === 1 ? step : 0), y);
    ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#9aa4b5";
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillText(`max ${max}`, 4, 13);
}

function connect() {
  const pill = document.getElementById("conn");
  const source = new EventSource("/api/state/stream");
  source.onopen = () => { pill.textContent = "live"; pill.className = "pill ok"; };
  source.onmessage = (event) => render(JSON.parse(event.data));
  source.addEventListener("gap", () => { pill.textContent = "live (gap)"; pill.className = "pill warn"; });
  source.addEventListener("bye", () => { pill.textContent = "server stopped"; pill.className = "pill bad"; source.close(); setTimeout(connect, 2000); });
  source.onerror = () => { pill.textContent = "reconnecting…"; pill.className = "pill bad"; };
}

async function startLoad(scenario, variant, say = alert) {
  const resp = await fetch("/api/load", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ scenario, variant }),
  });
  const body = await resp.json();
  if (!resp.ok) say(body.error);
  pollLoad();
  return resp.ok ? body.run : null;
}

let polling = null;
let loadRunning = false;
async function pollLoad() {
  clearTimeout(polling);
  let status;
  try {
    status = await (await fetch("/api/load")).json();
  } catch {
    polling = setTimeout(pollLoad, 2000); // the server is restarting: ask again
    return;
  }
  const state = document.getElementById("load-state");
  const label = status.variant ? `${status.scenario} / ${status.variant}` : status.scenario; // a ladder: no variant
  loadRunning = status.running;
  document.getElementById("load-output").textContent = status.output.join("\n");
  const progress = [...status.output].reverse().find((line) => line.startsWith("["));
  document.getElementById("load-progress").textContent = progress || "";
  const verdict = document.getElementById("load-verdict");
  verdict.textContent = status.verdict ? `VERDICT: ${status.verdict}` : "";
  verdict.className = status.verdict || "";
  for (const b of document.querySelectorAll("[data-testid^=load-]")) if (b.tagName === "BUTTON") b.disabled = status.running;
  if (status.running) {
    state.textContent = `running: ${label}`;
    state.className = "pill warn";
  } else if (status.scenario) {
    state.textContent = `${label}: ${status.verdict || "exit " + status.returncode}`;
    state.className = `pill ${status.returncode === 0 ? "ok" : "bad"}`;
  }
  if (talkRun !== null && status.run === talkRun) { // the load the talk's current step started
    const table = status.output.findIndex((line) => line.startsWith("step ")) - 1; // a ladder: question, table
    document.getElementById("talk-status").textContent = status.running
      ? `load running: ${progress || "starting"}`
      : table >= 0 ? status.output.slice(table).join("\n") // a ladder: its table
        : `VERDICT: ${status.verdict || "exit " + status.returncode}`;
  }
  // Always: a load started from a terminal (make load-...) reports to this app and shows here too.
  polling = setTimeout(pollLoad, status.running ? 500 : 1000);
}

function buildGallery(pitfalls) {
  const body = document.querySelector("#pitfalls tbody");
  for (const { name, summary, source } of pitfalls) {
    const cells = {};
    const row = el("tr", {}, el("td", {}, el("code", { title: source }, name), el("div", { class: "summary" }, summary)));
    for (const variant of VARIANTS) {
      const button = el("button", { "data-testid": `pitfall-${name}-${variant}` }, variant);
      cells[variant] = el("td", { class: "result" }, "");
      button.addEventListener("click", async () => {
        cells[variant].textContent = "running…";
        const r = await (await fetch(`/${variant}/pitfalls/${name}`)).json();
        cells[variant].textContent = r.summary;
        cells[variant].className = `result ${r.trap ? "trap" : "held"}`;
      });
      row.append(el("td", {}, button));
    }
    row.append(...VARIANTS.map((variant) => cells[variant]));
    row.title = summary;
    body.append(row);
  }
}

async function resetDemo(say = alert) {
  const resp = await fetch("/api/reset", { method: "POST" });
  if (!resp.ok) say((await resp.json()).error);
  for (const points of Object.values(history)) points.length = 0;
  return resp.ok;
}
document.getElementById("reset").addEventListener("click", () => resetDemo());

async function start() {
  const described = await (await fetch("/api/scenarios")).json();
  [SCENARIOS, VARIANTS, TALK] = [described.scenarios, described.variants, described.talk];
  buildColumns();
  buildGallery(described.pitfalls);
  connect();
  pollLoad();
  if (location.hash === "#talk") toggleTalk(true);
}

start();

// --- Talk mode: the README's "Give this talk", one step per → -------------------------------------------


function toggleTalk(on = !document.body.classList.contains("talking")) {
  document.body.classList.toggle("talking", on);
  document.getElementById("talk").hidden = !on;
  if (on) showStep();
}

function showStep() {
  const step = TALK[Math.max(talkAt, 0)];
  document.getElementById("talk-step").textContent = talkAt < 0 ? `→ runs step 1 of ${TALK.length}` : `step ${talkAt + 1} of ${TALK.length}`;
  document.getElementById("talk-title").textContent = step.title;
  document.getElementById("talk-say").textContent = step.say.replace(/`/g, "");
  document.getElementById("talk-status").textContent = "";
  document.body.classList.toggle("talk-overview", !step.code);
  const columns = document.getElementById("talk-code");
  columns.replaceChildren();
  if (!step.code) return;
  for (const variant of VARIANTS) {
    const code = step.code[variant];
    const pre = el("pre", { class: "code", "data-testid": `talk-code-${variant}` },
      ...code.lines.map((line) => el("span", { class: line.changed ? "line changed" : "line" }, line.text || " ")));
    const col = el("div", { class: `col ${variant}`, "data-variant": variant },
      el("h3", {}, step.labels[variant] || variant, el("span", { class: "source" }, step.source)),
      el("div", { class: "failures", "data-testid": `talk-failures-${variant}` }, step.pitfall ? "" : "–"),
      el("dl"), el("p", { class: "why" }, code.why), pre);
    columns.append(col);
  }
  renderTalk();
}

function renderTalk() {
  const step = TALK[Math.max(talkAt, 0)];
  if (!document.body.classList.contains("talking") || !step || !step.scenario || !lastSnapshot) return;
  const spec = SCENARIOS.find((s) => s.name === step.scenario);
  for (const col of document.querySelectorAll("#talk-code .col")) {
    const card = (lastSnapshot.cards[step.scenario] || {})[col.dataset.variant];
    if (card) fillCard(col, spec, card);
  }
}

async function runStep(step) {
  const status = document.getElementById("talk-status");
  const say = (text) => { status.textContent = text; };
  talkRun = null;
  if (step.action === "load" || step.action === "ladder") {
    talkRun = await startLoad(step.scenario, step.variant || "ladder", say);
    if (talkRun !== null) say(`load running: ${step.scenario} / ${step.variant || "ladder"}`);
  } else if (step.action === "reset") {
    if (await resetDemo(say)) say("reset: every figure counts from 0 again");
  } else if (step.action === "pitfall") {
    for (const variant of VARIANTS) {
      let box = document.querySelector(`[data-testid=talk-failures-${variant}]`);
      if (box) box.textContent = "running…";
      const r = await (await fetch(`/${variant}/pitfalls/${step.pitfall}`)).json();
      box = document.querySelector(`[data-testid=talk-failures-${variant}]`);
      if (!box || TALK[talkAt] !== step) return; // the speaker moved on meanwhile
      box.className = `failures result ${r.trap ? "nonzero" : "zero"}`;
      box.replaceChildren(r.trap ? "trap" : "held", el("small", {}, r.summary));
    }
  }
}

document.getElementById("talk-toggle").addEventListener("click", () => toggleTalk());
document.addEventListener("keydown", (event) => {
  if (["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName) || event.ctrlKey || event.metaKey) return;
  const talking = document.body.classList.contains("talking");
  if (event.key === "t") toggleTalk();
  else if (event.key === "ArrowRight" && talkAt + 1 < TALK.length) {
    if (!talking) toggleTalk(true);
    if (loadRunning && ["load", "ladder"].includes(TALK[talkAt + 1].action)) {
      document.getElementById("talk-status").textContent = "a load is still running: → again once its verdict is in";
      event.preventDefault();
      return;
    }
    talkAt += 1;
    showStep();
    runStep(TALK[talkAt]);
  } else if (event.key === "ArrowLeft" && talking && talkAt > 0) {
    talkAt -= 1;
    showStep();
  } else return;
  event.preventDefault();
});

// --- The cancellation map: one target explored by scripts.explore, points marked on the source ---------

async function buildMap() {
  const status = await (await fetch("/api/explore")).json();
  const select = document.getElementById("map-target");
  select.replaceChildren(...status.targets.map((t) => el("option", { value: t }, t)));
  document.getElementById("map-run").addEventListener("click", async () => {
    const resp = await fetch("/api/explore", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ target: select.value }),
    });
    if (!resp.ok) alert((await resp.json()).error);
    pollMap();
  });
  if (status.maps) renderMap(status);
}

let mapPolling = null;
async function pollMap() {
  clearTimeout(mapPolling);
  const status = await (await fetch("/api/explore")).json();
  const state = document.getElementById("map-state");
  document.getElementById("map-run").disabled = status.running;
  if (status.running) {
    state.textContent = `exploring ${status.target}…`;
    state.className = "pill warn";
    mapPolling = setTimeout(pollMap, 500);
    return;
  }
  state.textContent = status.maps ? `${status.target}: done` : `${status.target}: failed (exit ${status.returncode})`;
  state.className = `pill ${status.maps ? "ok" : "bad"}`;
  if (status.maps) renderMap(status);
}

function renderMap(status) {
  const detail = document.getElementById("map-detail");
  for (const variant of VARIANTS) {
    const col = document.getElementById(`map-${variant}`);
    const map = status.maps.find((m) => m.variant === variant && m.target === status.target);
    if (!map) { col.replaceChildren(el("h3", {}, el("span", {}, variant), el("span", {}, "—"))); continue; }
    const trials = map.trials.filter((t) => t.k > 0 && !t.second && t.where);
    const byLine = {};
    for (const t of trials) (byLine[t.where] ||= []).push(t);
    const byFile = {};
    for (const where of Object.keys(byLine)) {
      const [file, line] = [where.slice(0, where.lastIndexOf(":")), Number(where.slice(where.lastIndexOf(":") + 1))];
      (byFile[file] ||= []).push(line);
    }
    const blocks = Object.entries(byFile).map(([file, lines]) => {
      const source = status.files[file] || [];
      const shown = new Set(lines.flatMap((l) => [l - 2, l - 1, l, l + 1, l + 2]).filter((n) => n >= 1 && n <= source.length));
      const pre = el("pre", {}, el("span", { class: "line" }, `# ${file}`));
      let previous = null;
      for (const n of [...shown].sort((a, b) => a - b)) {
        if (previous !== null && n > previous + 1) pre.append(el("span", { class: "line" }, "   …"));
        previous = n;
        const here = byLine[`${file}:${n}`];
        const text = `${String(n).padStart(4)}  ${source[n - 1] ?? ""}`;
        if (!here) { pre.append(el("span", { class: "line" }, text)); continue; }
        const bad = here.filter((t) => t.violations.length);
        const span = el("span", {
          class: `line point ${bad.length ? "broken" : "held"}`,
          "data-testid": `map-point-${variant}-${n}`,
          "data-k": `k=${here.map((t) => t.k).join(",")}`,
          title: bad.length ? bad.flatMap((t) => t.violations).join("; ") : "held",
        }, text);
        span.addEventListener("click", () => {
          detail.textContent = `${variant} ${file}:${n} — ` + here.map((t) =>
            `k=${t.k}: ${t.outcome}${t.violations.length ? ", " + t.violations.join("; ") : ", held"}`).join(" | ");
        });
        pre.append(span);
      }
      return pre;
    });
    col.replaceChildren(el("h3", {}, el("span", {}, variant), el("span", {}, `${map.points} point${map.points === 1 ? "" : "s"} · ${map.verdict}`)), ...blocks);
  }
}

buildMap();
