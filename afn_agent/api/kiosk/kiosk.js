// The kiosk beside a machine: draws the agent's live view (server-sent events) and sends the member's
// taps back. No build step, no external files: it must work with the lab's network down.
"use strict";

const machine = decodeURIComponent(location.pathname.split("/").pop());
const lang = (new URLSearchParams(location.search).get("lang") || navigator.language || "en")
  .toLowerCase().startsWith("fr") ? "fr" : "en";
let token = null;
let view = null;

const $ = (id) => document.getElementById(id);
const show = (id, on) => $(id).classList.toggle("hidden", !on);

function hms(s) {
  if (s === null || s === undefined) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? h + " h " : "") + m + " min " + (h ? "" : r + " s");
}

// One request to the agent, as the member at the machine (its session token): the answer's JSON, or
// null with the reason shown.
async function call(method, path, body) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let answer = null;
  try { answer = await resp.json(); } catch (e) { /* no JSON body (204) */ }
  if (!resp.ok) {
    $("error").textContent = (answer && answer.detail) || resp.statusText;
    show("error", true);
    return null;
  }
  show("error", false);
  return answer || {};
}

function quoted(job) {
  const q = job.quote || {};
  return job.name + " — " + hms(job.estimate_s) + ", " + (job.material_g || 0).toFixed(1) + " g, " +
    (q.price ? q.price + " " + q.currency : "no quote");
}

function draw(v) {
  view = v;
  token = v.token || null;
  $("machine").textContent = v.machine;
  const state = $("state");
  state.textContent = v.locked ? "locked" : v.state;
  state.className = "state " + (v.locked ? "alarm" : v.state);

  const d = v.decision;
  show("decision", !!d);
  if (d) {
    $("decision").textContent = d.action === "badge-out" ? "Goodbye, " + (d.member_name || "") + "." : d.text;
    $("decision").className = "card " + (d.code === "allowed" ? "allowed" : "refused");
  }
  show("prompt", !v.session);
  show("who", !!v.session);
  if (v.session) {
    const until = v.session.allowed_until ? " until " + new Date(v.session.allowed_until).toLocaleTimeString() : "";
    $("who").textContent = (v.session.member_name || v.session.member_id) + " has this machine" + until +
      (v.session.supervisor_id ? " (supervised by " + v.session.supervisor_id + ")" : "") + ". Badge again to leave.";
  }
  show("alarms", v.alarms && v.alarms.length > 0);
  const list = $("alarm-list");
  list.textContent = "";
  for (const a of (v.alarms || []).slice().reverse()) {  // newest first
    const li = document.createElement("li");
    const when = document.createElement("time");
    when.dateTime = a.at;
    when.textContent = new Date(a.t * 1000).toLocaleString(lang);
    li.appendChild(when);
    li.appendChild(document.createTextNode(" " + ((a.text && a.text[lang]) || a.type)));
    list.appendChild(li);
  }
  show("material-box", !!v.session && !v.running);
  const select = $("material");
  if (select.options.length !== v.materials.length) {
    select.textContent = "";
    for (const name of v.materials) select.add(new Option(name, name));
  }
  if (document.activeElement !== select) select.value = v.material || "";
  show("confirm-box", !!v.needs_confirmation);
  $("confirm-text").textContent = v.needs_confirmation === "bed-clear"
    ? "Please remove the last job and clear the bed." : "Please check the machine before the next job.";

  const r = v.running;
  show("running", !!r);
  if (r) {
    $("job-name").textContent = r.name;
    const pct = Math.round((r.progress || 0) * 1000) / 10;
    $("bar-fill").style.width = pct + "%";
    $("progress").textContent = pct + " %";
    $("elapsed").textContent = "running " + hms(r.elapsed_s);
    $("eta").textContent = "about " + hms(r.eta_s) + " left";
    $("cost").textContent = r.price_so_far ? r.price_so_far + " " + r.currency : "–";
    $("material-used").textContent = r.material_g + " g";
    show("pause", v.state === "printing");
    show("resume", v.state === "paused");
  }

  const queue = $("queue");
  queue.textContent = "";
  for (const job of v.queue) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = quoted(job);
    li.appendChild(label);
    if (job.material && job.material.warning) {
      const warn = document.createElement("p");
      warn.className = "warning";
      warn.textContent = job.material.warning[lang];
      li.appendChild(warn);
    }
    if (job.state === "held") {
      const b = document.createElement("button");
      b.className = "start";
      b.textContent = "Start";
      b.dataset.job = job.id;
      b.onclick = () => call("POST", "/v1/jobs/" + job.id + "/start");
      li.appendChild(b);
    } else {
      const s = document.createElement("span");
      s.textContent = "waiting for the machine";
      li.appendChild(s);
    }
    queue.appendChild(li);
  }
  show("queue-box", v.queue.length > 0);

  const unclaimed = $("unclaimed");
  unclaimed.textContent = "";
  for (const job of v.unclaimed || []) {
    const li = document.createElement("li");
    li.appendChild(document.createTextNode(quoted(job) + " "));
    const b = document.createElement("button");
    b.className = "claim";
    b.textContent = "This is mine — start";
    b.onclick = () => { if (confirm("Start " + job.name + " and pay for it?")) call("POST", "/v1/jobs/" + job.id + "/claim"); };
    li.appendChild(b);
    unclaimed.appendChild(li);
  }
  show("unclaimed-box", (v.unclaimed || []).length > 0);
  show("key-box", !!v.session && !!token);
  if (!v.session) {  // a key is shown to its member only, never to the next one at the machine
    $("key-text").textContent = "";
    $("key-qr").textContent = "";
    show("key-shown", false);
  }
}

$("pause").onclick = () => call("POST", "/v1/machines/" + machine + "/pause");
$("resume").onclick = () => call("POST", "/v1/machines/" + machine + "/resume");
$("cancel").onclick = () => { if (confirm("Cancel this job?")) call("POST", "/v1/machines/" + machine + "/cancel"); };
$("clear-alarms").onclick = () => call("POST", "/v1/machines/" + machine + "/alarms/clear");
$("material").onchange = (e) => call("POST", "/v1/machines/" + machine + "/material", { material: e.target.value });
$("new-key").onclick = async () => {
  const made = await call("POST", "/v1/keys", { name: "made at " + machine + " on " + new Date().toISOString().slice(0, 10) });
  if (!made) return;
  $("key-text").textContent = made.key;
  $("key-qr").innerHTML = made.qr_svg;  // made by the agent from the key alone
  show("key-shown", true);
};
$("confirm").onclick = () => call("POST", "/v1/machines/" + machine + "/confirm");

function connect() {
  const source = new EventSource("/v1/kiosk/" + encodeURIComponent(machine) + "/stream");
  source.onmessage = (e) => draw(JSON.parse(e.data));
  source.onerror = () => {
    $("state").textContent = "agent unreachable";
    $("state").className = "state alarm";
  };
}
connect();
