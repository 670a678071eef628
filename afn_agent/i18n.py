"""User-facing words in French and English, from one catalogue: every screen (kiosk, dashboard, status)
shows a message by key, never a sentence assembled in code."""

from __future__ import annotations

import string
from typing import Any

LANGUAGES = ("en", "fr")

CATALOGUE: dict[str, dict[str, str]] = {
    # alarms, by kind (and the fault's reason code when there is one)
    "alarm.fault": {
        "en": "The machine stopped on a fault: {detail}",
        "fr": "La machine s'est arrêtée sur un défaut : {detail}",
    },
    "alarm.fault.thermal-runaway": {
        "en": "Thermal runaway: a heater did not behave as it should, so the firmware stopped the printer. "
        "Check the heater and its sensor before printing again.",
        "fr": "Emballement thermique : une chauffe ne s'est pas comportée normalement, le firmware a arrêté "
        "l'imprimante. Vérifiez la cartouche et sa sonde avant de relancer.",
    },
    "alarm.fault.maxtemp": {
        "en": "A heater went above its maximum temperature; the firmware stopped the printer.",
        "fr": "Une chauffe a dépassé sa température maximale ; le firmware a arrêté l'imprimante.",
    },
    "alarm.fault.mintemp": {
        "en": "A temperature sensor reads too low (unplugged or broken); the firmware stopped the printer.",
        "fr": "Une sonde de température lit trop bas (débranchée ou cassée) ; le firmware a arrêté "
        "l'imprimante.",
    },
    "alarm.fault.heating-failed": {
        "en": "A heater did not reach its temperature in time; the firmware stopped the printer.",
        "fr": "Une chauffe n'a pas atteint sa température à temps ; le firmware a arrêté l'imprimante.",
    },
    "alarm.fault.killed": {
        "en": "The firmware halted the machine: {detail}",
        "fr": "Le firmware a arrêté la machine : {detail}",
    },
    "alarm.fault.no-answer": {
        "en": "The machine stopped answering: {detail}",
        "fr": "La machine ne répond plus : {detail}",
    },
    "alarm.fault.firmware-reset": {
        "en": "The machine's controller restarted during the job (power, USB or reset); the job was not "
        "resumed.",
        "fr": "Le contrôleur de la machine a redémarré pendant le travail (alimentation, USB ou reset) ; "
        "le travail n'a pas été repris.",
    },
    "alarm.fault.resend-unavailable": {
        "en": "The link to the machine lost a line that could not be sent again: {detail}",
        "fr": "La liaison avec la machine a perdu une ligne impossible à renvoyer : {detail}",
    },
    "alarm.alarm": {
        "en": "Controller alarm {code}: {meaning}",
        "fr": "Alarme du contrôleur {code} : {meaning}",
    },
    "alarm.link-lost": {
        "en": "The machine's USB link was lost: {detail}",
        "fr": "La liaison USB avec la machine a été perdue : {detail}",
    },
    "alarm.door-open": {
        "en": "The machine's door was opened ({detail}).",
        "fr": "La porte de la machine a été ouverte ({detail}).",
    },
    "alarm.stall": {
        "en": "The machine went silent during the job; the safe state follows if it stays silent.",
        "fr": "La machine ne répond plus pendant le travail ; elle sera mise en sécurité si cela dure.",
    },
    "alarm.interlock-open": {
        "en": "An interlock (lid, door or extraction) is open.",
        "fr": "Une sécurité (capot, porte ou extraction) est ouverte.",
    },
    "alarm.power-unreachable": {
        "en": "The machine's power switch does not answer: {detail}",
        "fr": "Le relais d'alimentation de la machine ne répond pas : {detail}",
    },
    "alarm.other": {"en": "Alarm: {detail}", "fr": "Alarme : {detail}"},
    # quotes
    "quote.material-mismatch": {
        "en": "This file was sliced for {sliced}, but the machine has {loaded} loaded: its temperatures and "
        "flow may not suit it. Re-slice it, or change the filament.",
        "fr": "Ce fichier a été tranché pour {sliced}, mais la machine est chargée en {loaded} : ses "
        "températures et son débit peuvent ne pas convenir. Retranchez-le ou changez de filament.",
    },
}


class _Blank(dict[str, Any]):
    """Fields a message names but an alarm lacks read as empty, never as an error."""

    def __missing__(self, key: str) -> str:
        return ""


def words(key: str, **fields: Any) -> dict[str, str]:
    """The message `key` in every language, its fields filled in."""
    entry = CATALOGUE.get(key) or CATALOGUE["alarm.other"]
    values = _Blank({k: v for k, v in fields.items() if v is not None})
    return {lang: string.Formatter().vformat(entry[lang], (), values) for lang in LANGUAGES}


def alarm_words(kind: str, data: dict[str, Any]) -> dict[str, str]:
    """An alarm in words: the most specific message there is for its kind and reason code."""
    code = data.get("code")
    detail = data.get("reason") or data.get("meaning") or data.get("state") or data.get("detail") or ""
    for key in (f"alarm.{kind}.{code}", f"alarm.{kind}"):
        if key in CATALOGUE:
            return words(key, detail=detail, code=code, meaning=data.get("meaning"))
    return words("alarm.other", detail=detail or kind)
