// Charts for a fab manager: where each machine's time went (stacked bars, with their figures in words for
// screen readers), jobs and revenue per day, and a printer's temperatures live (uPlot, shipped with the
// package). Every word comes from the catalogues (/api/words).
"use strict";

let period = "day";
let daysData = null;
let tempsPlot = null, tempsData = null, tempsMachine = null;
const COLOURS = { busy: "#2a64c5", heating: "#c25e00", waiting: "#8a6110", idle: "#1f7a4d", down: "#b3261e", unknown: "#9aa5b1" };
const HEATER_COLOURS = ["#c25e00", "#2a64c5", "#6a3fb5", "#1f7a4d", "#b3261e", "#5f6b78"];

const dayText = (t) => new Date(t * 1000).toLocaleDateString(lang, { day: "numeric", month: "short" });
const clockText = (t) => new Date(t * 1000).toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
const pct = (part, whole) => (whole > 0 ? Math.round((part / whole) * 100) : 0);

// ---- utilisation --------------------------------------------------------------------------------------
function stack(name, row, buckets) {
  const total = buckets.reduce((sum, b) => sum + (row[b] || 0), 0);
  const div = document.createElement("div");
  div.className = "stack-row";
  const label = document.createElement("span");
  label.className = "stack-name";
  label.textContent = name || "–";
  const bar = document.createElement("div");
  bar.className = "stack";
  bar.setAttribute("role", "img");
  const parts = buckets.filter((b) => row[b] > 0).map((b) => say("fleet.c." + b) + " " + pct(row[b], total) + " %");
  bar.setAttribute("aria-label", say("fleet.c.share", { name: name || "–", parts: parts.join(", ") }));
  for (const b of buckets) {
    if (!(row[b] > 0)) continue;
    const seg = document.createElement("span");
    seg.style.width = (100 * row[b]) / total + "%";
    seg.style.background = COLOURS[b];
    seg.title = say("fleet.c." + b) + " " + pct(row[b], total) + " %";
    bar.appendChild(seg);
  }
  const figure = document.createElement("span");
  figure.className = "stack-figure";
  figure.textContent = pct((row.busy || 0) + (row.heating || 0), total - (row.unknown || 0)) + " %";
  div.append(label, bar, figure);
  return div;
}
async function loadUtilisation() {
  const r = await fetch("/api/charts/utilisation?period=" + period);
  if (!r.ok) { showMessage(r); return; }
  const u = await r.json();
  $("legend").replaceChildren(...u.buckets.map((b) => {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = COLOURS[b];
    li.append(swatch, say("fleet.c." + b));
    return li;
  }));
  const classes = Object.entries(u.classes).sort();
  const machines = Object.entries(u.machines).sort();
  const labs = Object.entries(u.labs || {}).sort();
  const several = labs.length > 1;
  $("by-lab-section").classList.toggle("hidden", !several);
  $("by-lab").replaceChildren(...labs.map(([l, row]) => stack(l, row, u.buckets)));
  $("by-class").replaceChildren(...classes.map(([c, row]) => stack(c, row, u.buckets)));
  $("by-machine").replaceChildren(...machines.map(([, row]) => stack(several ? row.lab + " · " + row.machine : row.machine, row, u.buckets)));
  if (!machines.length) $("by-machine").textContent = say("fleet.c.no-data");
  document.querySelectorAll("[data-period]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.period === period)));
}

// ---- jobs and revenue per day -------------------------------------------------------------------------
function drawDays() {
  const box = $("days-chart");
  box.replaceChildren();
  if (!daysData || !daysData.days.length) { box.textContent = say("fleet.c.no-data"); return; }
  const currencies = [...new Set(daysData.days.flatMap((d) => Object.keys(d.revenue)))];
  const currency = currencies[0] || "EUR";
  const xs = daysData.days.map((d) => Date.parse(d.day + "T12:00:00Z") / 1000);
  const data = [xs, daysData.days.map((d) => d.jobs), daysData.days.map((d) => d.revenue[currency] || 0)];
  const opts = {
    width: Math.min(box.clientWidth || 900, 1100), height: 260,
    series: [{ label: say("fleet.c.on-day"), value: (u, v) => (v ? dayText(v) : "–") }, { label: say("fleet.c.jobs"), stroke: "#2a64c5", width: 2, paths: uPlot.paths.bars({ size: [0.6, 40] }), fill: "#2a64c533" },
      { label: say("fleet.c.revenue", { currency }), stroke: "#1f7a4d", width: 2, scale: "money" }],
    axes: [{ values: (u, splits) => splits.map(dayText) }, { label: say("fleet.c.jobs") }, { side: 1, scale: "money", label: say("fleet.c.revenue", { currency }), grid: { show: false } }],
    scales: { x: { time: true, range: () => [Date.parse(daysData.since + "T00:00:00Z") / 1000, Date.now() / 1000 + 86400] }, money: {} },
  };
  new uPlot(opts, data, box);
  box.setAttribute("role", "img");
  box.setAttribute("aria-label", say("fleet.c.jobs-revenue") + ": " + daysData.days.map((d) => d.day + " " + d.jobs).join(", "));
}
async function loadDays() {
  const r = await fetch("/api/charts/days?days=30");
  if (!r.ok) { showMessage(r); return; }
  daysData = await r.json();
  drawDays();
}

// ---- live temperatures --------------------------------------------------------------------------------
async function loadTemps(machine) {
  tempsMachine = machine;
  const box = $("temps-chart");
  box.replaceChildren();
  tempsPlot = null;
  if (!machine) { box.textContent = say("fleet.c.no-data"); return; }
  const r = await fetch("/api/machines/" + encodeURIComponent(machine) + "/temperatures");
  if (!r.ok) return;
  const points = (await r.json()).points;
  const heaters = [...new Set(points.flatMap(([, t]) => Object.keys(t)))].sort();
  tempsData = [points.map(([t]) => t), ...heaters.map((h) => points.map(([, t]) => (h in t ? t[h] : null)))];
  tempsPlot = new uPlot({
    width: Math.min(box.clientWidth || 900, 1100), height: 260,
    series: [{ label: say("fleet.c.when"), value: (u, v) => (v ? clockText(v) : "–") }, ...heaters.map((h, i) => ({ label: heaterName(h), stroke: HEATER_COLOURS[i % HEATER_COLOURS.length], width: 2 }))],
    axes: [{ values: (u, splits) => splits.map(clockText) }, { label: "°C" }],
    scales: { x: { time: true, range: () => [Date.now() / 1000 - 3600, Date.now() / 1000 + 60] } },
  }, tempsData, box);
  tempsPlot.heaters = heaters;
  box.setAttribute("role", "img");
  box.setAttribute("aria-label", say("fleet.c.temperatures") + " " + machine);
}
function liveTemperature(d) {
  if (d.id !== tempsMachine || !tempsPlot) return;
  const now = Date.now() / 1000;
  tempsData[0].push(now);
  tempsPlot.heaters.forEach((h, i) => tempsData[i + 1].push(d.temperatures[h] ? d.temperatures[h][0] : null));
  tempsPlot.setData(tempsData);
}

// ---- page -------------------------------------------------------------------------------------------
async function showMessage(r) {
  $("message").textContent = r.status === 401 ? say("fleet.h.sign-in-first") : ((await r.json()).detail || r.status);
  $("message").classList.remove("hidden");
}
document.querySelectorAll("[data-period]").forEach((b) => (b.onclick = () => { period = b.dataset.period; loadUtilisation(); }));
$("printer").onchange = () => loadTemps($("printer").value);
$("lang").onclick = async () => {
  await switchLanguage("fleet.charts");
  loadUtilisation();
  drawDays();
  loadTemps(tempsMachine);
};
async function start() {
  await loadWords("fleet.charts");
  const fleet = await (await fetch("/api/fleet")).json();
  const printers = Object.keys(fleet.temperatures || {}).sort();
  $("printer").replaceChildren(...printers.map((m) => new Option(m, m)));
  loadUtilisation();
  loadDays();
  loadTemps(printers[0]);
  const es = new EventSource("/api/stream");
  es.addEventListener("temperatures", (m) => liveTemperature(JSON.parse(m.data)));
}
start();
