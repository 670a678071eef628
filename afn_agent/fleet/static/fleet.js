// Fleet dashboard: one tile per machine, live from the broker through the fleet service's event stream.
"use strict";

const tiles = new Map();
let manager = null;
const lang = (new URLSearchParams(location.search).get("lang") || navigator.language || "en")
  .toLowerCase().startsWith("fr") ? "fr" : "en";
const usage = {};
const $ = (id) => document.getElementById(id);

function hm(s) {
  if (s === null || s === undefined) return "";
  s = Math.round(s);
  return (s >= 3600 ? Math.floor(s / 3600) + " h " : "") + Math.floor((s % 3600) / 60) + " min";
}

function tileFor(id) {
  let t = tiles.get(id);
  if (!t) {
    t = $("tile-template").content.firstElementChild.cloneNode(true);
    t.id = "tile-" + id;
    t.querySelector(".name").textContent = id;
    t.querySelectorAll("button").forEach((b) => (b.onclick = () => command(id, b.dataset.command)));
    const all = [...tiles.keys(), id].sort();
    tiles.set(id, t);
    const next = all[all.indexOf(id) + 1];
    $("tiles").insertBefore(t, next ? tiles.get(next) : null);
  }
  return t;
}

function drawMachine(s) {
  const id = s.machine || s.id;
  const t = tileFor(id);
  const state = s.locked ? "locked" : s.state;
  t.dataset.state = s.state;
  t.dataset.class = s.class || "";
  t.classList.toggle("locked", !!s.locked);
  t.querySelector(".state").textContent = state + (s.lock_pending ? " (lock pending)" : "");
  const who = s.session ? (s.session.member_name || s.session.member_id) : (s.job && s.job.member_id) || "";
  t.querySelector(".who").textContent = who ? "in use by " + who : "free";
  t.querySelector(".job").textContent = s.job ? s.job.name : "";
  t.querySelector(".fill").style.width = s.job ? Math.round(s.job.progress * 100) + "%" : "0";
  t.querySelector(".eta").textContent = s.job ? Math.round(s.job.progress * 100) + " % · " + hm(s.job.eta_s) + " left" : "";
  const alarm = (s.alarms || []).slice(-1)[0];  // kept until a person clears it, whatever the state
  t.dataset.alarm = alarm ? alarm.type : "";
  t.querySelector(".alarm").textContent = alarm
    ? "⚠ " + new Date(alarm.t * 1000).toLocaleTimeString(lang) + " " + ((alarm.text && alarm.text[lang]) || alarm.type)
    : (s.needs_confirmation ? "needs a person: " + s.needs_confirmation : "");
  t.querySelector(".actions").classList.toggle("hidden", !manager);
  addClass(s.class);
  applyFilter();
}

function drawUsage(id, u) {
  usage[id] = u;
  tileFor(id).querySelector(".usage").textContent =
    "today: " + u.jobs + " jobs, " + hm(u.busy_s) + (u.utilisation !== undefined ? ", " + Math.round(u.utilisation * 100) + " % busy" : "");
}

// Home Assistant (or any OctoPrint app) asking for a key at a machine: a manager grants or denies it here.
const keyRequests = new Map();

function drawKeyRequests() {
  const list = $("key-request-list");
  list.replaceChildren();
  for (const r of keyRequests.values()) {
    const li = document.createElement("li");
    li.dataset.request = r.request;
    li.textContent = r.machine + ": " + r.app + (r.user ? " (" + r.user + ")" : "") + " ";
    for (const [label, grant] of [["Grant", true], ["Deny", false]]) {
      const b = document.createElement("button");
      b.textContent = label;
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
  const answer = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ grant }) });
  if (!answer.ok) { alert((await answer.json()).detail); return; }
  keyRequests.delete(r.request);
  drawKeyRequests();
}

function keyEvent(e) {
  if (e.type === "appkey_requested") keyRequests.set(e.request, { request: e.request, machine: e.machine, app: e.app, user: e.user });
  else if (e.type === "appkey_decided") keyRequests.delete(e.request);
  else return;
  drawKeyRequests();
}

function addEvent(e) {
  const li = document.createElement("li");
  const when = e.t ? new Date(e.t * 1000).toLocaleTimeString() : "";
  li.textContent = when + " " + e.machine + ": " + e.type + (e.reason ? " — " + e.reason : "") +
    (e.code && typeof e.code === "string" ? " (" + e.code + ")" : "") + (e.member_id ? " · " + e.member_id : "");
  const list = $("events");
  list.insertBefore(li, list.firstChild);
  while (list.children.length > 100) list.removeChild(list.lastChild);
}

function addClass(c) {
  if (!c) return;
  const sel = $("class-filter");
  if (![...sel.options].some((o) => o.value === c)) sel.add(new Option(c, c));
}

function applyFilter() {
  const c = $("class-filter").value;
  let busy = 0, alarms = 0;
  for (const t of tiles.values()) {
    t.classList.toggle("hidden", !!c && t.dataset.class !== c);
    if (["printing", "paused", "waiting"].includes(t.dataset.state)) busy++;
    if (t.dataset.state === "alarm" || t.dataset.state === "fault" || t.dataset.alarm) alarms++;
  }
  $("summary").textContent = tiles.size + " machines · " + busy + " busy · " + alarms + " in alarm";
}

// A one-time code for a screen at that machine (docs/console.md): shown here, only its hash is sent on.
async function pairingCode(machine) {
  const r = await fetch("/api/machines/" + encodeURIComponent(machine) + "/pairing-code", { method: "POST" });
  const answer = await r.json();
  if (!r.ok) { alert(answer.detail); return; }
  tiles.get(machine).querySelector(".pair-code").textContent = answer.code;
}

async function command(machine, name) {
  if (name === "pairing-code") return pairingCode(machine);
  const body = { command: name };
  if (name === "lock") body.reason = prompt("Reason for the lock-out?", "maintenance") || "maintenance";
  const r = await fetch("/api/machines/" + encodeURIComponent(machine) + "/command", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!r.ok) alert((await r.json()).detail);
}

$("login").onsubmit = async (ev) => {
  ev.preventDefault();
  const r = await fetch("/api/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: $("login-name").value, key: $("login-key").value }) });
  if (!r.ok) { alert("Sign-in refused"); return; }
  manager = (await r.json()).manager;
  showManager();
};

function showManager() {
  $("login").classList.toggle("hidden", !!manager);
  $("manager").classList.toggle("hidden", !manager);
  $("manager").textContent = manager ? "manager: " + manager : "";
  document.querySelectorAll(".actions").forEach((a) => a.classList.toggle("hidden", !manager));
  drawKeyRequests();
}

$("class-filter").onchange = applyFilter;

function connect() {
  const es = new EventSource("/api/stream");
  es.addEventListener("snapshot", (m) => {
    const s = JSON.parse(m.data);
    Object.values(s.machines).forEach(drawMachine);
    Object.entries(s.usage_today).forEach(([id, u]) => drawUsage(id, u));
    s.events.slice().reverse().forEach(addEvent);
    (s.key_requests || []).forEach((r) => keyRequests.set(r.request, r));
    drawKeyRequests();
    $("broker").textContent = "live";
  });
  es.addEventListener("machine", (m) => drawMachine(JSON.parse(m.data)));
  es.addEventListener("usage", (m) => { const u = JSON.parse(m.data); drawUsage(u.id, u); });
  es.addEventListener("event", (m) => { const e = JSON.parse(m.data); addEvent(e); keyEvent(e); });
  es.addEventListener("agent", (m) => {
    const a = JSON.parse(m.data);
    if (a.state === "offline") (a.machines || []).forEach((id) => { const t = tiles.get(id); if (t) t.dataset.state = "offline"; });
  });
  es.addEventListener("reload", () => { es.close(); location.reload(); });
  es.onerror = () => { $("broker").textContent = "reconnecting…"; };
}

fetch("/api/fleet").then((r) => r.json()).then((s) => { manager = s.manager; showManager(); connect(); });
