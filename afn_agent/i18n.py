"""User-facing words in French and English, from gettext catalogues (`locale/*/LC_MESSAGES/afn.po`, read with
Babel): every screen (kiosk, dashboard, status) shows a message by key, never a sentence assembled in code;
money, clock times and durations are formatted for the language's locale here too."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from babel.dates import format_time
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal

LANGUAGES = ("en", "fr")
LOCALES = {"en": "en_GB", "fr": "fr_FR"}  # money, dates and times: "€0.50" / "0,50 €", a 24-hour clock
LOCALE_DIR = Path(__file__).with_name("locale")


def _read(lang: str) -> dict[str, str]:
    """One language's gettext catalogue (`locale/<lang>/LC_MESSAGES/afn.po`): message key -> its words."""
    with open(LOCALE_DIR / lang / "LC_MESSAGES" / "afn.po", "rb") as f:
        catalog = read_po(f, locale=lang)
    return {str(m.id): str(m.string) for m in catalog if m.id and m.string}


def _catalogue() -> dict[str, dict[str, str]]:
    by_lang = {lang: _read(lang) for lang in LANGUAGES}
    keys = set().union(*by_lang.values())
    missing = [f"{lang}: {k}" for k in sorted(keys) for lang in LANGUAGES if k not in by_lang[lang]]
    if missing:
        raise RuntimeError(f"message catalogues out of step (missing {', '.join(missing[:5])})")
    return {k: {lang: by_lang[lang][k] for lang in LANGUAGES} for k in keys}


CATALOGUE: dict[str, dict[str, str]] = _catalogue()


class _Blank(dict[str, Any]):
    """Fields a message names but an alarm lacks read as empty, never as an error."""

    def __missing__(self, key: str) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class Msg:
    """A message not yet in words: its key and facts, rendered in each language where it is shown (a
    refusal's reason travels as one; a fact may itself be a Msg, e.g. the machine's state)."""

    key: str
    facts: Mapping[str, Any] = field(default_factory=dict)

    def words(self) -> dict[str, str]:
        return words(self.key, **self.facts)


def msg(key: str, **facts: Any) -> Msg:
    if key not in CATALOGUE:
        raise KeyError(f"no message {key!r} in the catalogues")  # a bug: caught by the tests
    return Msg(key, facts)


class _Filler(string.Formatter):
    """Fills a message's fields for one language: a nested Msg in that language, a bare number with the
    language's decimal mark (`0,5` in French); a field with a format spec keeps it."""

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Msg):
            return value.words()[self.lang]
        if isinstance(value, float) and not format_spec:
            return str(format_decimal(round(value, 3), locale=LOCALES[self.lang]))
        return str(super().format_field(value, format_spec))


def words(key: str, **fields: Any) -> dict[str, str]:
    """The message `key` in every language, its fields filled in."""
    entry = CATALOGUE.get(key) or CATALOGUE["alarm.other"]
    values = _Blank({k: v for k, v in fields.items() if v is not None})
    return {lang: _Filler(lang).vformat(entry[lang], (), values) for lang in LANGUAGES}


def alarm_words(kind: str, data: dict[str, Any]) -> dict[str, str]:
    """An alarm in words: the most specific message there is for its kind and reason code."""
    code = data.get("code")
    detail = data.get("reason") or data.get("meaning") or data.get("state") or data.get("detail") or ""
    for key in (f"alarm.{kind}.{code}", f"alarm.{kind}"):
        if key in CATALOGUE:
            return words(key, detail=detail, code=code, meaning=data.get("meaning"))
    return words("alarm.other", detail=detail or kind)


def text(key: str, lang: str, **fields: Any) -> str:
    """The message `key` in one language (English if the language is not one of ours)."""
    return words(key, **fields)[lang if lang in LANGUAGES else "en"]


def texts(lang: str, *prefixes: str) -> dict[str, str]:
    """Every message under these key prefixes, in one language, fields unfilled (the screen's labels)."""
    lang = lang if lang in LANGUAGES else "en"
    return {k: v[lang] for k, v in CATALOGUE.items() if k.startswith(prefixes)}


def money(amount: str | Decimal | None, currency: str | None, lang: str) -> str:
    """`0,50 €` in French, `€0.50` in English; a dash when there is no amount."""
    if amount is None or not currency:
        return "–"
    return str(format_currency(Decimal(str(amount)), currency, locale=LOCALES.get(lang, "en_GB")))


def number(value: float, lang: str, places: int = 1) -> str:
    """`1 234,5` in French, `1,234.5` in English, with exactly `places` decimals."""
    pattern = "#,##0." + "0" * places if places else "#,##0"
    return str(format_decimal(value, format=pattern, locale=LOCALES.get(lang, "en_GB")))


def duration(seconds: float | None, lang: str) -> str:
    """`1 h 05 min`, or `4 min 09 s` under an hour; a dash when unknown."""
    if seconds is None:
        return "–"
    s = max(round(seconds), 0)
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return text("fmt.hm", lang, h=h, m=m) if h else text("fmt.ms", lang, m=m, s=sec)


def clock(moment: datetime | None, lang: str) -> str:
    """A time of day on the 24-hour clock (`15:04`), in the agent's local time zone."""
    if moment is None:
        return "–"
    return str(format_time(moment.astimezone(), "HH:mm", locale=LOCALES.get(lang, "en_GB")))
