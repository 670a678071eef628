// The console beside a machine: draws the agent's live view (server-sent events) and sends the member's
// taps back. Every word comes from the agent's catalogues in the view (`text`, `*_text`): this file only
// places them. No build step, no external files: it must work with the lab's network down.
"use strict";

const machine = decodeURIComponent(location.pathname.split("/").pop());
const params = new URLSearchParams(location.search);
const deviceKey = "afn-screen:" + machine;  // a paired screen's own key (a tablet, not this host)
let lang = params.get("lang") || localStorage.getItem("afn-lang:" + machine) || "";
let token = null;  // the session's token, given to the screen while a member holds the machine
let view = null;
let source = null;
const history = [];  // temperatures over the last minutes, for the chart

const $ = (id) => document.getElementById(id);
const show = (id, on) => $(id).classList.toggle("hidden", !on);
const put = (id, text) => { $(id).textContent = text == null ? "" : text; };

function bearer() {
  return token || localStorage.getItem(deviceKey);
}

// One request to the agent, as the member at the machine: the answer's JSON, or null with the reason shown.
async function call(method, path, body) {
  const headers = bearer() ? { Authorization: "Bearer " + bearer() } : {};
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let answer = null;
  try { answer = await resp.json(); } catch (e) { /* no JSON body (204) */ }
  if (!resp.ok) {
    // A reason in words (the console's refusals) in the screen's language; else the agent's sentence.
    const said = answer && answer.words && view ? answer.words[view.lang] : null;
    put("error", said || (answer && (answer.error || answer.detail)) || resp.statusText);
    show("error", true);
    return null;
  }
  show("error", false);
  return answer || {};
}

const consoleUrl = (action) => "/v1/machines/" + encodeURIComponent(machine) + "/console/" + action;
const act = (action, body) => call("POST", consoleUrl(action), body || {});
const control = (action) => call("POST", "/v1/machines/" + encodeURIComponent(machine) + "/" + action);

function labels(v) {
  document.documentElement.lang = v.lang;
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = v.text[el.dataset.t] || "";
  put("lang", v.text["ui.language"]);
  document.title = machine + " · " + v.text["ui.title"];
}

// A job's own button (start, claim): one request on the job, named by the catalogue.
function jobButton(job, cls, label, action) {
  const b = document.createElement("button");
  b.className = cls;
  b.type = "button";
  b.textContent = view.text[label];
  b.onclick = () => call("POST", "/v1/jobs/" + job.id + "/" + action);
  return b;
}

function jobLine(job, action) {
  const li = document.createElement("li");
  if (job.thumbnail) {
    const img = document.createElement("img");
    img.src = job.thumbnail;
    img.alt = job.name;
    img.className = "thumb small";
    li.appendChild(img);
  }
  const label = document.createElement("span");
  label.className = "grow";
  for (const part of [job.name, job.estimate_text, job.grams_text, job.price_text]) {
    const s = document.createElement("span");
    s.className = "part";
    s.textContent = part;
    label.append(s, " ");
  }
  li.appendChild(label);
  if (job.material && job.material.warning) {
    const warn = document.createElement("p");
    warn.className = "warning";
    warn.textContent = job.material.warning[view.lang];
    li.appendChild(warn);
  }
  if (action === "start" && job.state === "held") li.appendChild(jobButton(job, "start", "ui.start", "start"));
  if (action === "claim") li.appendChild(jobButton(job, "claim", "ui.claim", "claim"));
  return li;
}

function drawJobs(v) {
  const queue = $("queue");
  queue.textContent = "";
  for (const job of v.queue) queue.appendChild(jobLine(job, "start"));
  show("queue-box", v.queue.length > 0);
  const unclaimed = $("unclaimed");
  unclaimed.textContent = "";
  for (const job of v.unclaimed || []) unclaimed.appendChild(jobLine(job, "claim"));
  show("unclaimed-box", (v.unclaimed || []).length > 0);
}

function drawRunning(v) {
  const r = v.running;
  show("running", !!r);
  if (!r) return;
  put("job-name", r.name);
  $("job-thumb").src = r.thumbnail || "";
  $("job-thumb").alt = r.name;
  show("job-thumb", !!r.thumbnail);
  const pct = Math.round((r.progress || 0) * 100);
  $("bar-fill").style.width = pct + "%";
  $("bar").setAttribute("aria-valuenow", String(pct));
  put("progress", r.progress_text);
  put("elapsed", r.elapsed_text);
  put("eta", r.eta_text);
  put("eta-label", v.text[r.heating ? "ui.eta-heating" : "ui.eta"]);
  put("cost", r.price_text);
  show("material-fig", v.kind === "printer");
  put("material-used", r.material_text);
  show("machine-time-fig", !!r.machine_time_text);
  put("machine-time-label", r.machine_time_label);
  put("machine-time", r.machine_time_text);
  show("pause", v.state === "printing");
  show("resume", v.state === "paused");
  show("babystep", v.kind === "printer" && v.state === "printing");
}

function drawTemperatures(v) {
  show("temps", v.kind === "printer" && v.temperatures.length > 0);
  const list = $("temp-list");
  list.textContent = "";
  for (const t of v.temperatures) {
    const li = document.createElement("li");
    for (const part of [t.label, t.text, t.eta_text]) {  // catalogue pieces side by side, not a sentence
      const s = document.createElement("span");
      s.className = "part";
      s.textContent = part;
      li.append(s, " ");
    }
    list.appendChild(li);
  }
  if (!v.temperatures.length) return;
  history.push(v.temperatures.map((t) => [t.actual, t.target]));
  if (history.length > 240) history.shift();
  const top = Math.max(60, ...history.flat(2)) * 1.1;
  const svg = $("chart");
  svg.textContent = "";
  v.temperatures.forEach((_, i) => {
    for (const which of [0, 1]) {
      const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      line.setAttribute("points", history.map((h, x) => (x * 300 / 239) + "," +
        (60 - (((h[i] || [0, 0])[which]) / top) * 60)).join(" "));
      line.setAttribute("class", "heater-" + i + (which ? " target" : ""));
      svg.appendChild(line);
    }
  });
}

function drawSetup(v) {
  const inSession = !!v.session;
  const toolChange = v.prompt && v.prompt.host;
  const cnc = v.kind === "mill" || v.kind === "laser";
  show("setup", cnc && inSession && (v.state === "idle" || toolChange));
  show("printer-tools", v.kind === "printer" && inSession && v.state === "idle");
  show("unlock", v.state === "alarm" && inSession);
  const p = v.position || {};
  put("pos", ["X", "Y", "Z"].filter((a) => a in p).map((a) => a + " " + p[a]).join("  "));
  const step = $("step");
  if (step.options.length !== (v.jog_steps || []).length) {
    step.textContent = "";
    for (const s of v.jog_steps || []) step.add(new Option(s + " mm", String(s)));
    step.value = String((v.jog_steps || [1])[Math.min(1, (v.jog_steps || []).length - 1)]);
  }
  show("probe", v.kind === "mill");
  show("home", !!v.homes);
  show("frame", !toolChange && v.queue.length > 0);
  show("zero-xy", !toolChange);
  show("go-to-zero", !toolChange);
  put("probe-result", v.probe ? v.probe.text : "");
  const select = $("material");
  if (select.options.length !== v.materials.length) {
    select.textContent = "";
    for (const name of v.materials) select.add(new Option(name, name));
  }
  if (document.activeElement !== select) select.value = v.material || "";
}

function draw(v) {
  view = v;
  token = v.token || null;
  labels(v);
  put("machine", v.machine);
  put("state", v.state_text);
  $("state").className = "state " + (v.locked ? "alarm" : v.state);
  const d = v.decision;
  show("decision", !!d);
  if (d) {
    put("decision", d.text);
    $("decision").className = "card " + (d.code === "allowed" ? "allowed" : "refused");
  }
  show("badge-in", !v.session);
  show("who", !!v.session);
  if (v.session) { put("held-by", v.session.held_text); put("until", v.session.until_text); }
  show("alarms", v.alarms.length > 0);
  const list = $("alarm-list");
  list.textContent = "";
  for (const a of v.alarms.slice().reverse()) {  // newest first
    const li = document.createElement("li");
    li.textContent = a.words || a.type;
    list.appendChild(li);
  }
  show("prompt-box", !!v.prompt);
  if (v.prompt) { put("prompt-title", v.prompt.title); put("prompt-text", v.prompt.text); }
  show("confirm-box", !!v.needs_confirmation);
  drawRunning(v);
  drawTemperatures(v);
  drawSetup(v);
  drawJobs(v);
  const s = v.summary;
  show("summary", !!s && !v.running);
  if (s) {
    put("summary-name", s.name);
    put("summary-outcome", s.outcome_text);
    put("summary-time", s.time_text);
    show("summary-material-fig", !!s.material_text);
    put("summary-material", s.material_text);
    show("summary-machine-fig", !!s.machine_time_text);
    put("summary-machine-label", s.machine_time_label);
    put("summary-machine", s.machine_time_text);
    put("summary-price", s.price_text);
    $("summary-thumb").src = s.thumbnail || "";
    $("summary-thumb").alt = s.name;
    show("summary-thumb", !!s.thumbnail);
    if ($("summary-picture").getAttribute("src") !== (s.picture || "")) $("summary-picture").src = s.picture || "";
    $("summary-picture").alt = v.text["ui.camera-picture"] || "";
    show("summary-picture", !!s.picture);
  }
  show("key-box", !!v.session && !!token);
  if (!v.session) {  // a key is shown to its member only, never to the next one at the machine
    put("key-text", "");
    put("key-qr", "");
    show("key-shown", false);
  }
}

// ---- jogging: a tap is one step; held (with "hold to move") it runs until released --------------
let holding = null;
function jogStart(btn) {
  const axes = {};
  const dir = Number(btn.dataset.dir);
  if ($("hold").checked) {
    axes[btn.dataset.axis] = dir;
    act("jog", { axes, continuous: true });
    holding = setInterval(() => act("jog", { axes, continuous: true }), 200);  // the agent's lease: 0.5 s
  } else {
    axes[btn.dataset.axis] = dir * Number($("step").value);
    act("jog", { axes });
  }
}
function jogEnd() {
  if (holding === null) return;
  clearInterval(holding);
  holding = null;
  act("jog-stop");
}
for (const btn of document.querySelectorAll(".jog-btn")) {
  btn.addEventListener("pointerdown", (e) => { e.preventDefault(); jogStart(btn); });
  for (const ev of ["pointerup", "pointerleave", "pointercancel"]) btn.addEventListener(ev, jogEnd);
}
window.addEventListener("blur", jogEnd);

$("zero-xy").onclick = () => act("zero", { axes: { X: 0, Y: 0 } });
$("zero-z").onclick = () => act("zero", { axes: { Z: 0 } });
$("probe").onclick = () => act("probe");
$("go-to-zero").onclick = () => act("go-to-zero");
$("home").onclick = () => act("home");
$("frame").onclick = () => act("frame");
$("unlock").onclick = () => act("unlock");
$("continue").onclick = () => act("continue");
$("preheat").onclick = () => act("preheat", { material: $("material").value });
$("cooldown").onclick = () => act("cooldown");
$("load").onclick = () => act("load");
$("unload").onclick = () => act("unload");
$("raise-z").onclick = () => act("raise-z");
$("baby-up").onclick = () => act("babystep", { z: 0.02 });
$("baby-down").onclick = () => act("babystep", { z: -0.02 });
$("pause").onclick = () => control("pause");
$("resume").onclick = () => control("resume");
$("cancel").onclick = () => { if (confirm(view.text["ui.cancel"] + " ?")) control("cancel"); };
$("clear-alarms").onclick = () => control("alarms/clear");
$("confirm").onclick = () => control("confirm");
$("material").onchange = (e) =>
  call("POST", "/v1/machines/" + encodeURIComponent(machine) + "/material", { material: e.target.value });
$("new-key").onclick = async () => {
  const made = await call("POST", "/v1/keys", { name: machine + " " + new Date().toISOString().slice(0, 10) });
  if (!made) return;
  put("key-text", made.key);
  $("key-qr").innerHTML = made.qr_svg;  // made by the agent from the key alone
  show("key-shown", true);
};
$("lang").onclick = () => {
  lang = view.other_lang;
  localStorage.setItem("afn-lang:" + machine, lang);
  connect();
};
$("pair-send").onclick = async () => {
  const paired = await call("POST", "/v1/pair", { code: $("pair-code").value, name: navigator.platform || "screen" });
  if (!paired) return;
  localStorage.setItem(deviceKey, paired.token);
  show("pairing", false);
  connect();
};

async function connect() {
  if (source) source.close();
  const q = new URLSearchParams();
  if (lang) q.set("lang", lang);
  const key = localStorage.getItem(deviceKey);
  if (key) q.set("apikey", key);  // EventSource cannot send headers
  const url = "/v1/kiosk/" + encodeURIComponent(machine);
  const probe = await fetch(url + "?" + q, { headers: key ? { Authorization: "Bearer " + key } : {} });
  if (probe.status === 401 || probe.status === 403) {  // another device: pair it first
    const words = await fetch("/v1/kiosk-words?lang=" + (lang || "fr"));
    labels(await words.json());
    show("pairing", true);
    return;
  }
  source = new EventSource(url + "/stream?" + q);
  source.onmessage = (e) => draw(JSON.parse(e.data));
  source.onerror = () => { $("state").className = "state alarm"; };
}
connect();
