// Fleet dashboard: every machine of the site, live from the broker through the fleet service's event
// stream. Every word comes from the agent's catalogues (/api/words); the buttons a tile shows are the
// ones its status offers (`actions`, the rule the agent also refuses by).
"use strict";

const params = new URLSearchParams(location.search);
let manager = null;
let view = params.get("view") === "table" ? "table" : "tiles";
let sortKey = "machine", sortUp = true;
const machines = new Map();   // id -> latest status (as this audience may see it)
const temps = new Map();      // id -> {heater: [actual, target]}
const usage = new Map();      // id -> today's figures
const tiles = new Map();      // id -> tile element
const offline = new Set();    // machines whose agent is gone
const keyRequests = new Map();
const recentEvents = [];
const pictures = new Map();   // id -> the latest camera picture's facts (managers)

// ---- what a status means --------------------------------------------------------------------------
function kindOf(cls) {
  const c = (cls || "").toLowerCase();
  if (c.includes("laser")) return "laser";
  if (c.includes("mill") || c.includes("cnc") || c.includes("router")) return "mill";
  if (c.includes("print") || c.includes("fdm") || c.includes("sla")) return "printer";
  return "other";
}
function stateKey(s) {
  if (offline.has(s.key)) return "offline";
  if (s.locked) return "locked";
  if (s.power && s.power.on === false && s.state !== "printing") return "powered-off";
  if (s.state === "printing" && s.job && s.job.state === "heating") return "heating";
  return s.state;
}
function stateWords(s) {
  const k = stateKey(s);
  if (k === "offline") return say("fleet.agent-offline");
  if (k === "powered-off") return say("fleet.powered-off");
  if (k === "printing") return say("state.printing." + kindOf(s.class));
  return say("state." + k);
}
function tempsText(id) {
  const t = temps.get(id);
  if (!t) return "";
  return Object.entries(t).map(([h, [a, target]]) =>
    heaterName(h) + " " + num(a) + (target ? " / " + num(target) : "") + " °C").join(" · ");
}
function whoText(s) {
  if (s.session && s.session.in_use) return say("fleet.in-use-anon");
  const who = s.session ? (s.session.member_name || s.session.member_id)
    : (s.job && (s.job.member_name || s.job.member_id));
  if (who) return say("fleet.in-use", { name: who });
  return s.job ? say("fleet.in-use-anon") : say("fleet.free");
}
function alarmText(s) {
  const alarm = (s.alarms || []).slice(-1)[0];  // kept until a person clears it, whatever the state
  if (alarm) {
    const when = new Date(alarm.t * 1000).toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
    return "⚠ " + when + " " + ((alarm.text && alarm.text[lang]) || alarm.type);
  }
  if (s.needs_confirmation) {
    const key = "fleet.confirm." + s.needs_confirmation;
    return words[key] !== undefined ? say(key) : say("fleet.needs", { what: s.needs_confirmation });
  }
  if (s.prompt) {  // the firmware's own text when it gave one (M117/M0 "..."), else the kind in words
    const key = "prompt." + s.prompt.kind;
    const what = s.prompt.text || (words[key] !== undefined ? say(key, { tool: s.prompt.tool }) : s.prompt.kind);
    return say("fleet.prompt", { what });
  }
  return "";
}
const isBusy = (s) => ["printing", "paused", "waiting"].includes(s.state);
const inAlarm = (s) => s.state === "alarm" || s.state === "fault" || (s.alarms || []).length > 0;

// ---- tiles ------------------------------------------------------------------------------------------
function tileFor(id) {
  let t = tiles.get(id);
  if (!t) {
    t = $("tile-template").content.firstElementChild.cloneNode(true);
    t.id = "tile-" + id;
    t.querySelector(".name").textContent = id;
    const all = [...tiles.keys(), id].sort();
    tiles.set(id, t);
    const next = all[all.indexOf(id) + 1];
    $("tiles").insertBefore(t, next ? tiles.get(next) : null);
  }
  return t;
}
function put(t, sel, text) {
  const el = t.querySelector(sel);
  if (el.textContent !== text) el.textContent = text;
}
function drawTile(id) {
  const s = machines.get(id);
  if (!s) return;
  const t = tileFor(id);
  const key = stateKey(s);
  t.dataset.state = key;
  t.dataset.class = s.class || "";
  t.dataset.lab = s.lab || "";
  t.dataset.alarm = (s.alarms || []).length ? "yes" : "";
  put(t, ".state", stateWords(s) + (s.lock_pending ? " · " + say("fleet.lock-pending") : ""));
  put(t, ".kind", s.class || "");
  put(t, ".who", whoText(s));
  put(t, ".job", s.job ? s.job.name : "");
  const pct = s.job ? Math.round(s.job.progress * 100) : 0;
  t.querySelector(".fill").style.width = pct + "%";
  t.querySelector(".bar").setAttribute("aria-valuenow", String(pct));
  t.querySelector(".bar").setAttribute("aria-label", s.job ? s.job.name : id);
  put(t, ".eta", s.job ? say("fleet.eta", { progress: pct, left: hm(s.job.eta_s) }) : "");
  put(t, ".temps", tempsText(id));
  put(t, ".queue", s.queued ? say("fleet.queued", { n: s.queued }) : "");
  put(t, ".alarm", s.locked && s.lock_reason && !(s.alarms || []).length
    ? say("fleet.locked-for", { reason: s.lock_reason }) : alarmText(s));
  const u = usage.get(id);
  put(t, ".usage", u ? say("fleet.today", { jobs: u.jobs, busy: hm(u.busy_s), pct: Math.round((u.utilisation || 0) * 100) }) : "");
  drawPicture(t, id);
  drawActions(t, id, s);
}
function drawPicture(t, id) {
  const img = t.querySelector(".picture");
  const p = pictures.get(id);
  img.classList.toggle("hidden", !manager || !p);
  if (!manager || !p) return;
  const src = "/api/machines/" + encodeURIComponent(id) + "/picture.jpg?v=" + encodeURIComponent(p.sha256 || p.t || "");
  if (img.getAttribute("src") !== src) img.src = src;
  img.alt = say("fleet.picture", { machine: id, moment: say("fleet.moment." + (p.moment || "demand")) });
}
function drawActions(t, id, s) {
  const box = t.querySelector(".actions");
  const mine = manager && s.yours !== false;  // a manager of another lab only looks
  box.classList.toggle("hidden", !mine);
  if (!mine) return;
  const offered = offline.has(id) ? [] : (s.actions || []);
  const sig = offered.join(",") + "|" + lang;
  if (box.dataset.sig === sig) return;
  box.dataset.sig = sig;
  box.replaceChildren();
  for (const name of offered) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.command = name;
    b.textContent = say("fleet.action." + name);
    if (name === "estop") b.className = "danger";
    b.onclick = () => command(id, name);
    box.appendChild(b);
  }
  const pair = document.createElement("button");
  pair.type = "button";
  pair.dataset.command = "pairing-code";
  pair.textContent = say("fleet.action.pair");
  pair.onclick = () => pairingCode(id, box);
  const code = document.createElement("output");
  code.className = "pair-code";
  box.append(pair, code);
}

// ---- table ------------------------------------------------------------------------------------------
function sortValue(s, key) {
  if (key === "progress") return s.job ? s.job.progress : -1;
  if (key === "queue") return s.queued || 0;
  if (key === "state") return stateWords(s);
  if (key === "lab") return s.lab || "";
  if (key === "class") return s.class || "";
  return s.key;
}
function drawTable() {
  if (view !== "table") return;
  const rows = [...machines.values()].filter(shown);
  rows.sort((a, b) => {
    const x = sortValue(a, sortKey), y = sortValue(b, sortKey);
    const c = typeof x === "number" ? x - y : String(x).localeCompare(String(y), lang);
    return (sortUp ? c : -c) || a.key.localeCompare(b.key);
  });
  const body = $("table").tBodies[0];
  const out = rows.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.state = stateKey(s);
    const cells = [s.key, s.lab || "", s.class || "", stateWords(s), whoText(s), s.job ? s.job.name : "",
      s.job ? Math.round(s.job.progress * 100) + " %" : "", s.queued ? String(s.queued) : "", tempsText(s.key), alarmText(s)];
    cells.forEach((text, i) => {
      const td = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) td.scope = "row";
      td.textContent = text;
      tr.appendChild(td);
    });
    return tr;
  });
  body.replaceChildren(...out);
  document.querySelectorAll("th button[data-sort]").forEach((b) => {
    b.parentElement.setAttribute("aria-sort", b.dataset.sort === sortKey ? (sortUp ? "ascending" : "descending") : "none");
  });
}

// ---- filters and the summary ------------------------------------------------------------------------
function addOption(sel, value, text) {
  if (value && ![...sel.options].some((o) => o.value === value)) sel.add(new Option(text || value, value));
}
function shown(s) {
  const lab = $("lab-filter").value, cls = $("class-filter").value, st = $("state-filter").value;
  return (!lab || s.lab === lab) && (!cls || s.class === cls) && (!st || stateKey(s) === st);
}
let pending = false;
function refresh() {  // once per frame, whatever the number of changes that came in
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    let busy = 0, alarms = 0;
    for (const [id, s] of machines) {
      const t = tiles.get(id);
      if (t) t.classList.toggle("hidden", !shown(s));
      if (isBusy(s)) busy++;
      if (inAlarm(s)) alarms++;
    }
    $("summary").textContent = say("fleet.summary", { machines: machines.size, busy, alarms });
    drawTable();
  });
}
function onMachine(s) {
  const id = s.key || s.id || s.machine;  // another lab's machines are `<lab>:<id>`
  s.key = id;
  machines.set(id, s);
  addOption($("class-filter"), s.class);
  addOption($("lab-filter"), s.lab);
  addOption($("state-filter"), stateKey(s), stateWords(s));
  drawTile(id);
  refresh();
}

// ---- events and key requests --------------------------------------------------------------------------
function addEvent(e) {
  recentEvents.unshift(e);
  recentEvents.length = Math.min(recentEvents.length, 100);
  drawEvent(e, true);
}
function drawEvent(e, first) {
  const li = document.createElement("li");
  li.className = e.tone === "alarm" ? "bad" : "";
  const when = e.t ? new Date(e.t * 1000).toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" }) + " " : "";
  li.textContent = when + ((e.words && e.words[lang]) || e.type);
  const list = $("events");
  if (first) list.insertBefore(li, list.firstChild); else list.appendChild(li);
  while (list.children.length > 100) list.removeChild(list.lastChild);
}
function redrawEvents() {
  $("events").replaceChildren();
  recentEvents.forEach((e) => drawEvent(e, false));
}
function drawKeyRequests() {
  const list = $("key-request-list");
  list.replaceChildren();
  for (const r of keyRequests.values()) {
    const li = document.createElement("li");
    li.dataset.request = r.request;
    li.textContent = r.machine + ": " + r.app + (r.user ? " (" + r.user + ")" : "") + " ";
    for (const [key, grant] of [["fleet.grant", true], ["fleet.deny", false]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = say(key);
      b.className = grant ? "grant" : "deny";
      b.onclick = () => decideKey(r, grant);
      li.appendChild(b);
    }
    list.appendChild(li);
  }
  $("key-requests").classList.toggle("hidden", !manager || keyRequests.size === 0);
}
async function decideKey(r, grant) {
  const url = "/api/machines/" + encodeURIComponent(r.machine) + "/appkeys/" + encodeURIComponent(r.request);
  const answer = await post(url, { grant });
  if (!answer) return;
  keyRequests.delete(r.request);
  drawKeyRequests();
}
function keyEvent(e) {
  if (e.type === "appkey_requested" && e.request) keyRequests.set(e.request, { request: e.request, machine: e.key || e.machine, app: e.app, user: e.user });
  else if (e.type === "appkey_decided") keyRequests.delete(e.request);
  else return;
  drawKeyRequests();
}

// ---- commands ---------------------------------------------------------------------------------------
async function post(url, body) {
  const r = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) { alert(answer.detail || r.status); return null; }
  return answer;
}
function ask(dialog) {
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
  });
}
async function pairingCode(machine, box) {
  const answer = await post("/api/machines/" + encodeURIComponent(machine) + "/pairing-code");
  if (!answer) return;
  box.querySelector(".pair-code").textContent = answer.code;
}
async function command(machine, name) {
  const body = { command: name };
  if (name === "estop") {
    $("estop-question").textContent = say("fleet.estop-confirm", { machine });
    if (!(await ask($("estop-dialog")))) return;
  }
  if (name === "lock") {
    if (!(await ask($("lock-dialog")))) return;
    body.reason = $("lock-reason").value || "maintenance";
  }
  await post("/api/machines/" + encodeURIComponent(machine) + "/command", body);
}

// ---- page -------------------------------------------------------------------------------------------
function showManager() {
  $("login").classList.toggle("hidden", !!manager);
  $("manager").classList.toggle("hidden", !manager);
  $("manager").textContent = manager ? say("fleet.signed-in", { name: manager }) : "";
  for (const id of machines.keys()) drawTile(id);
  drawKeyRequests();
}
$("login").onsubmit = async (ev) => {
  ev.preventDefault();
  const r = await fetch("/api/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: $("login-name").value, key: $("login-key").value }) });
  if (!r.ok) { alert(say("fleet.sign-in-refused")); return; }
  location.reload();  // the stream is opened again as a manager's (names, key requests)
};
function setView(v) {
  view = v;
  $("tiles").classList.toggle("hidden", v !== "tiles");
  $("table-view").classList.toggle("hidden", v !== "table");
  $("view-tiles").setAttribute("aria-pressed", String(v === "tiles"));
  $("view-table").setAttribute("aria-pressed", String(v === "table"));
  refresh();
}
$("view-tiles").onclick = () => setView("tiles");
$("view-table").onclick = () => setView("table");
document.querySelectorAll("th button[data-sort]").forEach((b) => (b.onclick = () => {
  sortUp = sortKey === b.dataset.sort ? !sortUp : true;
  sortKey = b.dataset.sort;
  refresh();
}));
["lab-filter", "class-filter", "state-filter"].forEach((id) => ($(id).onchange = refresh));
$("lang").onclick = async () => {
  await switchLanguage("fleet.title");
  for (const id of machines.keys()) drawTile(id);
  [...$("state-filter").options].forEach((o) => { if (o.value) o.textContent = say(o.value === "offline" ? "fleet.agent-offline" : "state." + o.value); });
  redrawEvents();
  showManager();
  refresh();
};
function connect() {
  const es = new EventSource("/api/stream");
  es.addEventListener("snapshot", (m) => {
    const s = JSON.parse(m.data);
    Object.values(s.agents || {}).forEach((a) => { if (a.state === "offline") (a.machines || []).forEach((id) => offline.add(id)); });
    Object.entries(s.temperatures || {}).forEach(([id, t]) => temps.set(id, t));
    Object.entries(s.usage_today).forEach(([id, u]) => usage.set(id, u));
    Object.values(s.machines).forEach(onMachine);
    s.events.slice().reverse().forEach(addEvent);
    (s.key_requests || []).forEach((r) => keyRequests.set(r.request, r));
    Object.entries(s.pictures || {}).forEach(([id, p]) => { pictures.set(id, p); if (tiles.has(id)) drawTile(id); });
    drawKeyRequests();
    $("broker").dataset.say = "fleet.live";
    $("broker").textContent = say("fleet.live");
    $("broker").classList.add("live");
  });
  es.addEventListener("machine", (m) => { const s = JSON.parse(m.data); offline.delete(s.id); onMachine(s); });
  es.addEventListener("temperatures", (m) => {
    const d = JSON.parse(m.data);
    temps.set(d.id, d.temperatures);
    if (machines.has(d.id)) { put(tileFor(d.id), ".temps", tempsText(d.id)); if (view === "table") refresh(); }
  });
  es.addEventListener("picture", (m) => { const p = JSON.parse(m.data); pictures.set(p.id, p); if (machines.has(p.id)) drawTile(p.id); });
  es.addEventListener("usage", (m) => { const u = JSON.parse(m.data); usage.set(u.id, u); drawTile(u.id); });
  es.addEventListener("event", (m) => { const e = JSON.parse(m.data); addEvent(e); keyEvent(e); });
  es.addEventListener("agent", (m) => {
    const a = JSON.parse(m.data);
    for (const id of a.machines || []) {
      if (a.state === "offline") offline.add(id); else offline.delete(id);
      if (machines.has(id)) drawTile(id);
    }
    refresh();
  });
  es.addEventListener("reload", () => { es.close(); location.reload(); });
  es.onerror = () => {
    $("broker").dataset.say = "fleet.reconnecting";
    $("broker").textContent = say("fleet.reconnecting");
    $("broker").classList.remove("live");
  };
}

loadWords("fleet.title").then(() => fetch("/api/fleet")).then((r) => r.json()).then((s) => {
  manager = s.manager;
  setView(view);
  showManager();
  connect();
});
