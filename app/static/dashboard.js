// The live dashboard: figures over Server-Sent Events (/api/state/stream), loads and reset over POST.
"use strict";

const SCENARIOS = {
  disconnect: {
    failures: (v) => (v.invariants.orders_without_items || 0) + refused(v, "disconnect"),
    failuresLabel: "orders without items + refused requests",
    rows: (v) => [
      ["orders without items", v.invariants.orders_without_items],
      ["requests refused (5xx)", refused(v, "disconnect")],
      ["server backends", `${v.postgres.backends ?? "?"} / limit ${v.postgres.role_connection_limit ?? "?"}`],
      ["pool in use", `${v.postgres.pool_in_use} / ${v.postgres.pool_max}`],
      ["handlers cancelled", v.handlers_cancelled],
    ],
    spark: (v) => v.postgres.backends || 0,
    sparkLabel: "backends",
  },
  pubsub: {
    failures: (v) => refused(v, "pubsub"),
    failuresLabel: "refused subscribers and publishes",
    rows: (v) => [
      ["live subscribers", v.subscribers],
      ["Redis connections in use", `${v.redis.connections_in_use} / ${v.redis.max_connections}`],
      ["messages dropped (slow clients)", v.invariants.messages_dropped],
    ],
    spark: (v) => v.redis.connections_in_use,
    sparkLabel: "Redis connections",
  },
  shield: {
    failures: (v) => (v.invariants.transfers_lost || 0) - v.jobs.active - v.jobs.pending > 0
      ? (v.invariants.transfers_lost || 0) - v.jobs.active - v.jobs.pending : 0,
    failuresLabel: "accepted transfers lost",
    rows: (v) => [
      ["transfers not committed", v.invariants.transfers_lost],
      ["aiojobs active / pending", `${v.jobs.active} / ${v.jobs.pending}`],
      ["requests refused (5xx)", refused(v, "shield")],
    ],
    spark: (v) => v.invariants.transfers_lost || 0,
    sparkLabel: "not committed",
  },
};
const HISTORY = 120; // points: one minute at two snapshots a second
const history = {};

function refused(v, scenario) {
  const r = (v.requests || {})[scenario] || {};
  return r["5xx"] || 0;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, val] of Object.entries(attrs)) {
    if (k === "class") node.className = val; else node.setAttribute(k, val);
  }
  for (const child of children) node.append(child);
  return node;
}

function buildColumns() {
  for (const [name, spec] of Object.entries(SCENARIOS)) {
    for (const col of document.querySelectorAll(`#${name} .col`)) {
      const variant = col.dataset.variant;
      const button = el("button", { "data-testid": `load-${name}-${variant}` }, "Run load");
      button.addEventListener("click", () => startLoad(name, variant));
      col.append(
        el("h3", {}, variant, button),
        el("div", { class: "failures", "data-testid": `failures-${name}-${variant}` }, "–"),
        el("dl"),
        el("canvas", { width: 600, height: 46, title: spec.sparkLabel }),
      );
      history[`${name}-${variant}`] = [];
    }
  }
}

function render(snapshot) {
  for (const [name, spec] of Object.entries(SCENARIOS)) {
    for (const col of document.querySelectorAll(`#${name} .col`)) {
      const v = snapshot.variants[col.dataset.variant];
      if (!v) continue;
      const failures = spec.failures(v);
      const box = col.querySelector(".failures");
      box.className = `failures ${failures ? "nonzero" : "zero"}`;
      box.replaceChildren(String(failures), el("small", {}, spec.failuresLabel));
      col.classList.toggle("failing", col.dataset.variant === "broken" && failures > 0);
      col.classList.toggle("holding", col.dataset.variant === "fixed" && failures === 0);
      const dl = col.querySelector("dl");
      dl.replaceChildren(...spec.rows(v).flatMap(([k, val]) => [el("dt", {}, k), el("dd", {}, String(val ?? "?"))]));
      const points = history[`${name}-${col.dataset.variant}`];
      points.push(spec.spark(v));
      if (points.length > HISTORY) points.shift();
      spark(col.querySelector("canvas"), points, col.dataset.variant === "broken" ? "#ff5c5c" : "#3ddc84");
    }
  }
}

function spark(canvas, points, color) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const max = Math.max(1, ...points);
  ctx.strokeStyle = color;
  ctx.lineWidth = 3;
  ctx.beginPath();
  points.forEach((p, i) => {
    const x = (i / (HISTORY - 1)) * width;
    const y = height - 3 - (p / max) * (height - 6);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
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

async function startLoad(scenario, variant) {
  const resp = await fetch("/api/load", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ scenario, variant }),
  });
  const body = await resp.json();
  if (!resp.ok) alert(body.error);
  pollLoad();
}

let polling = null;
async function pollLoad() {
  clearTimeout(polling);
  const status = await (await fetch("/api/load")).json();
  const state = document.getElementById("load-state");
  document.getElementById("load-output").textContent = status.output.join("\n");
  for (const b of document.querySelectorAll("[data-testid^=load-]")) if (b.tagName === "BUTTON") b.disabled = status.running;
  if (status.running) {
    state.textContent = `running: ${status.scenario} / ${status.variant}`;
    state.className = "pill warn";
    polling = setTimeout(pollLoad, 500);
  } else if (status.scenario) {
    state.textContent = `${status.scenario} / ${status.variant}: ${status.verdict || "exit " + status.returncode}`;
    state.className = `pill ${status.returncode === 0 ? "ok" : "bad"}`;
  }
}

async function buildGallery() {
  const list = await (await fetch("/fixed/pitfalls")).json();
  const body = document.querySelector("#pitfalls tbody");
  for (const [name, line] of Object.entries(list)) {
    const cells = {};
    const row = el("tr", {}, el("td", {}, el("code", {}, name)));
    for (const variant of ["broken", "fixed"]) {
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
    row.append(cells.broken, cells.fixed);
    row.title = line;
    body.append(row);
  }
}

document.getElementById("reset").addEventListener("click", async () => {
  const resp = await fetch("/api/reset", { method: "POST" });
  if (!resp.ok) alert((await resp.json()).error);
  for (const points of Object.values(history)) points.length = 0;
});

buildColumns();
connect();
pollLoad();
buildGallery();

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
  for (const variant of ["broken", "fixed"]) {
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
