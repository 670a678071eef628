// The job history: usage records the fleet dashboard kept, newest first, by filter and page (the
// server pages by key, so the last page costs what the first does); a row opens its job's events.
"use strict";

let cursors = [null];  // the cursor each page shown so far started after (back = pop)
let page = null;

const money = (amount, currency) => new Intl.NumberFormat(lang, { style: "currency", currency: currency || "EUR" }).format(Number(amount));
const when = (iso) => new Date(iso).toLocaleString(lang, { dateStyle: "short", timeStyle: "short" });
function used(r) {
  const parts = [];
  if (r.material_total && r.material_total.g) parts.push(num(r.material_total.g, 1) + " g");
  if (r.beam_on_s) parts.push(say("fleet.h.beam", { t: hm(r.beam_on_s) }));
  if (r.spindle_on_s) parts.push(say("fleet.h.spindle", { t: hm(r.spindle_on_s) }));
  return parts.join(" · ");
}

function query(after) {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData($("filter"))) if (v) q.set(k, v);
  if (after) { q.set("after_end", after[0]); q.set("after_id", after[1]); }
  return q;
}
async function load() {
  const after = cursors[cursors.length - 1];
  const r = await fetch("/api/history?" + query(after));
  if (!r.ok) {
    $("message").textContent = r.status === 401 ? say("fleet.h.sign-in-first") : (await r.json()).detail;
    $("message").classList.remove("hidden");
    return;
  }
  page = await r.json();
  $("message").classList.add("hidden");
  $("csv").href = "/api/history.csv?" + query(null);
  draw();
}
function draw() {
  if (!page) return;
  $("count").textContent = page.total ? say("fleet.h.count", { total: num(page.total, 0) }) : say("fleet.h.none");
  const rows = page.records.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.record = r.record_id;
    tr.dataset.outcome = r.job.outcome;
    const link = document.createElement("button");
    link.type = "button";
    link.className = "linkish";
    link.textContent = when(r.end);
    link.onclick = () => details(r.record_id);
    const cells = [link, r.machine.id, r.member_name || r.member_id || "", r.job.name, say("outcome." + r.job.outcome),
      hm(r.time_s.total_s, true), used(r), money(r.price, r.currency)];
    cells.forEach((c, i) => {
      const td = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) td.scope = "row";
      if (typeof c === "string") td.textContent = c; else td.appendChild(c);
      tr.appendChild(td);
    });
    return tr;
  });
  $("records").tBodies[0].replaceChildren(...rows);
  $("previous").disabled = cursors.length <= 1;
  $("next").disabled = !page.next;
}
async function details(recordId) {
  const r = await fetch("/api/history/" + encodeURIComponent(recordId));
  if (!r.ok) return;
  const { record, events, pictures } = await r.json();
  $("details-pictures").replaceChildren(...(pictures || []).map((p) => {
    const img = document.createElement("img");
    img.src = p.url;
    img.width = 320;
    img.alt = say("fleet.picture", { machine: record.machine.id, moment: say("fleet.moment." + (p.moment || "demand")) });
    return img;
  }));
  $("details-title").textContent = record.machine.id + " · " + record.job.name;
  const facts = [[say("fleet.h.member"), record.member_id || ""], [say("fleet.h.outcome"), say("outcome." + record.job.outcome)],
    [say("fleet.h.time"), hm(record.time_s.total_s, true)], [say("fleet.h.used"), used(record)], [say("fleet.h.price"), money(record.price, record.currency)]];
  $("details-facts").replaceChildren(...facts.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
  $("details-events").replaceChildren(...events.map((e) => {
    const li = document.createElement("li");
    li.textContent = (e.t ? new Date(e.t * 1000).toLocaleTimeString(lang) + " " : "") + ((e.words && e.words[lang]) || e.type);
    return li;
  }));
  $("details").classList.remove("hidden");
}

$("filter").onsubmit = (ev) => { ev.preventDefault(); cursors = [null]; load(); };
$("next").onclick = () => { if (page && page.next) { cursors.push(page.next); load(); } };
$("previous").onclick = () => { if (cursors.length > 1) { cursors.pop(); load(); } };
$("lang").onclick = async () => {
  await switchLanguage("fleet.history-title");
  draw();
};
loadWords("fleet.history-title").then(load);
