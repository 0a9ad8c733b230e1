"""Languages of the web app: German and English, chosen by a cookie (the switch) or the browser's
``Accept-Language``; messages from the gettext catalogs shipped in the package (``locale/<lang>/
LC_MESSAGES/messages.po``, read once at startup: no build step) and numbers, money and dates
formatted per locale by Babel."""

from __future__ import annotations

from datetime import date, datetime
from importlib.resources import files

import pandas as pd
from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent

LANGUAGES = ("en", "de")  # English is the source language of the messages
DEFAULT = "en"
COOKIE = "kw_lang"
MISSING = "–"  # a value that is not known (not scored, too few customers)


def load_catalogs() -> dict[str, dict[str, str]]:
    """message id -> translation, per language. English needs only the words of codes
    (``email:channel`` -> ``email``): its sentences are the message ids themselves."""
    out: dict[str, dict[str, str]] = {}
    for lang in LANGUAGES:
        source = files("kundenwert.serving.web").joinpath("locale", lang, "LC_MESSAGES", "messages.po")
        with source.open("rb") as f:
            catalog = read_po(f, locale=lang)
        out[lang] = {str(m.id): str(m.string) for m in catalog if m.id and m.string and not m.fuzzy}
    return out


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    """The language: the switch's cookie, else the browser's first acceptable one, else English."""
    if cookie in LANGUAGES:
        return str(cookie)
    ranked: list[tuple[float, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if tag:
            ranked.append((-q + i * 1e-6, tag.split("-")[0].lower()))
    for _, lang in sorted(ranked):
        if lang in LANGUAGES:
            return lang
    return DEFAULT


class Formats:
    """Message lookup and Babel formatting in one language, with ``currency`` for money."""

    def __init__(self, lang: str, messages: dict[str, str], currency: str) -> None:
        self.lang, self.messages, self.currency = lang, messages, currency
        self.locale = Locale.parse(lang)

    def gettext(self, message: str, **values: object) -> str:
        """The translation of ``message`` (itself in English), ``%(name)s`` filled from ``values``."""
        text = self.messages.get(message)
        if text is None:  # a code without a word of its own (a new category): the code, readable
            code, sep, _ = message.rpartition(":")
            text = code.replace("_", " ") if sep and code and " " not in message else message
        return text % values if values else text

    @staticmethod
    def _missing(x: object) -> bool:
        return x is None or (isinstance(x, float) and x != x) or x is pd.NaT

    def number(self, x: object, digits: int = 0) -> str:
        if self._missing(x):
            return MISSING
        fmt = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(float(x), format=fmt, locale=self.locale)  # type: ignore[arg-type]

    def percent(self, x: object, digits: int = 1) -> str:
        if self._missing(x):
            return MISSING
        # the locale's own pattern (German: "25,6 %" with a no-break space) with ``digits`` decimals
        fmt = self.locale.percent_formats[None].pattern.replace(
            "#,##0", "#,##0" + ("." + "0" * digits if digits else ""), 1
        )
        return format_percent(float(x), format=fmt, locale=self.locale)  # type: ignore[arg-type]

    def points(self, x: object, digits: int = 1) -> str:
        """An absolute difference of two rates, in percentage points (signed)."""
        if self._missing(x):
            return MISSING
        v = float(x) * 100  # type: ignore[arg-type]
        text = format_decimal(
            v, format="+#,##0." + "0" * digits + ";-#,##0." + "0" * digits, locale=self.locale
        )
        return f"{text} {self.gettext('pp')}"

    def money(self, x: object, digits: int = 2) -> str:
        if self._missing(x):
            return MISSING
        return format_currency(
            float(x),  # type: ignore[arg-type]
            self.currency,
            locale=self.locale,
            format=None
            if digits == 2
            else self.locale.currency_formats["standard"].pattern.replace(".00", ""),
            currency_digits=digits == 2,
        )

    def date(self, x: object) -> str:
        if self._missing(x):
            return MISSING
        return format_date(_as_datetime(x), format="medium", locale=self.locale)

    def datetime(self, x: object) -> str:
        if self._missing(x):
            return MISSING
        return format_datetime(_as_datetime(x), format="short", locale=self.locale, tzinfo=None)


def _as_datetime(x: object) -> datetime | date:
    if isinstance(x, str):
        x = pd.Timestamp(x)
    if isinstance(x, pd.Timestamp):
        return x.to_pydatetime()
    assert isinstance(x, (datetime, date))
    return x
