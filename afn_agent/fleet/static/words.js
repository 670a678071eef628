// What the dashboard's three pages share: the chosen language, the catalogue's words (/api/words, the
// same catalogues as the machine's console) and the helpers that fill and format them.
"use strict";

const $ = (id) => document.getElementById(id);
let lang = new URLSearchParams(location.search).get("lang") || localStorage.getItem("afn-fleet-lang") ||
  ((navigator.language || "en").toLowerCase().startsWith("fr") ? "fr" : "en");
let words = {};

// A catalogue entry with its {fields} filled in (format specs such as {m:02d} are the agent's side).
function say(key, facts) {
  const text = words[key] !== undefined ? words[key] : key;
  return text.replace(/\{(\w+)(:[^}]*)?\}/g, (_, name) => (facts && facts[name] !== undefined ? String(facts[name]) : ""));
}
const num = (v, places = 0) => new Intl.NumberFormat(lang, { maximumFractionDigits: places, minimumFractionDigits: places }).format(v);
function hm(s, withSeconds = false) {
  if (s === null || s === undefined) return "–";
  s = Math.max(Math.round(s), 0);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  if (h) return h + " h " + String(m).padStart(2, "0") + " min";
  return withSeconds ? m + " min " + String(s % 60).padStart(2, "0") + " s" : m + " min";
}
function heaterName(h) {
  if (h === "B") return say("fleet.heater.bed");
  if (h === "C") return say("fleet.heater.chamber");
  const n = h.replace(/^T/, "");
  return say("fleet.heater.tool") + (n && n !== "0" ? " " + (Number(n) + 1) : "");
}

// The page's words in `lang`: every [data-say] element, placeholders, the title and the language button.
async function loadWords(titleKey) {
  const w = await (await fetch("/api/words?lang=" + lang)).json();
  lang = w.lang;
  words = w.text;
  document.documentElement.lang = lang;
  document.title = say(titleKey);
  document.querySelectorAll("[data-say]").forEach((el) => (el.textContent = say(el.dataset.say)));
  document.querySelectorAll("[data-say-placeholder]").forEach((el) => (el.placeholder = say(el.dataset.sayPlaceholder)));
  $("lang").textContent = say("fleet.other-language");
  $("lang").lang = lang === "fr" ? "en" : "fr";
}
async function switchLanguage(titleKey) {
  lang = lang === "fr" ? "en" : "fr";
  localStorage.setItem("afn-fleet-lang", lang);
  await loadWords(titleKey);
}
