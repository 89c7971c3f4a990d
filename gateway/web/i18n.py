"""English, French and Dutch: the user picks one (a cookie), else the browser's preference.

Texts are written in English in the templates and the code (`_("Open alarms")`); the catalog
(gateway/web/catalog.py) maps each to French and Dutch. A test checks that every text used in
a template or label has both translations. Identifiers that reach the page (health, kinds,
alarm names, downlink states...) go through LABELS first, so they translate too.

`Formatter` writes numbers, sizes, durations and times the way each language reads them
(decimal comma in French and Dutch; "il y a 3 min", "3 min geleden").
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from markupsafe import Markup

from gateway.web.catalog import CATALOG

LANGUAGES = (("en", "English"), ("fr", "Français"), ("nl", "Nederlands"))
CODES = tuple(code for code, _ in LANGUAGES)
DEFAULT = "en"
COOKIE = "gw_lang"
DASH = "\u2013"  # shown where a value is unknown
NBSP = "\u00a0"  # between a number and its unit, so a narrow screen never splits them

LABELS: dict[str, dict[str, str]] = {
    "health": {"ok": "OK", "late": "Late", "silent": "Silent", "alarm": "Alarm"},
    # what a node reports about itself in its status (gateway/web/model.py CONDITIONS)
    "condition": {"safe_mode": "Safe mode", "error": "Reporting an error"},
    "kind": {
        "leak": "Water meter",
        "occupancy": "Parking spot",
        "lighting": "Street light",
        "binfill": "Waste bin",
    },
    "link": {"coap": "WiFi (CoAP)", "lora": "LoRa"},
    "downlink": {
        "queued": "Queued",
        "sent": "Sent",
        "confirmed": "Confirmed",
        "refused": "Refused",
        "expired": "Expired",
    },
    # why a node refused a downlink (protocol.schema.REFUSALS)
    "refusal": {
        "malformed": "Not readable by the node",
        "wrong_kind": "Meant for another kind of node",
        "invalid": "A value the node does not accept",
        "unsupported": "Not supported by this node",
        "failed": "Failed on the node",
    },
    "sink": {"starting": "Starting", "up": "Up", "down": "Down"},
    "role": {"viewer": "Viewer", "operator": "Operator"},
    "alarm": {
        "probe_wet": "Probe wet",
        "leak_confirmed": "Leak confirmed",
        "bin_full": "Bin full",
        "bin_fire": "Bin fire",
        "lamp_fault": "Lamp fault",
        "battery_low": "Battery low",
        "bin_tilt": "Bin tilted",
    },
    "audit": {
        "login": "Log in",
        "logout": "Log out",
        "ack": "Acknowledge alarm",
        "identify": "Identify",
        "reboot": "Reboot",
        "interval": "Reporting interval",
        "lighting_profile": "Lighting profile",
        "bin_emptied": "Bin emptied",
        "recalibrate": "Re-calibrate",
        "csrf": "Forged request",
    },
    "outcome": {"ok": "done", "failed": "failed", "blocked": "blocked", "refused": "refused"},
}


def label(value: str, group: str) -> str:
    """The English text for an identifier (translate it with `_` afterwards)."""
    return LABELS.get(group, {}).get(value, value)


def choose(request: web.Request) -> str:
    chosen = request.cookies.get(COOKIE, "")
    if chosen in CODES:
        return chosen
    return from_accept_language(request.headers.get("Accept-Language", ""))


def from_accept_language(header: str) -> str:
    best, best_q = DEFAULT, 0.0
    for position, part in enumerate(header.split(",")[:20]):
        pieces = part.strip().split(";")
        code = pieces[0].strip().lower().split("-")[0]
        q = 1.0
        for param in pieces[1:]:
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        q -= position * 1e-6  # equal weights: the first listed wins
        if code in CODES and q > best_q:
            best, best_q = code, q
    return best


def translator(lang: str) -> Callable[[str], str]:
    if lang == DEFAULT:
        return lambda text: text
    index = CODES.index(lang) - 1

    def translate(text: str) -> str:
        found = CATALOG.get(text)
        return found[index] if found else text

    return translate


_AGO = {
    "en": ("just now", "{n} s ago", "{n} min ago", "{n} h ago", "{n} d ago"),
    "fr": ("à l\u2019instant", "il y a {n} s", "il y a {n} min", "il y a {n} h", "il y a {n} j"),
    "nl": ("zojuist", "{n} s geleden", "{n} min geleden", "{n} u geleden", "{n} d geleden"),
}
_UNITS = {"en": ("s", "min", "h", "d"), "fr": ("s", "min", "h", "j"), "nl": ("s", "min", "u", "d")}
_THOUSANDS = {"en": ",", "fr": "\u202f", "nl": "."}
_DECIMAL = {"en": ".", "fr": ",", "nl": ","}


class Formatter:
    """Numbers and times for one language, relative to one `now`."""

    def __init__(self, lang: str, now: float | None = None) -> None:
        self.lang = lang
        self.now = time.time() if now is None else now
        self._ = translator(lang)

    def count(self, n: float | None) -> str:
        if n is None:
            return DASH
        return f"{round(n):,}".replace(",", _THOUSANDS[self.lang])

    def num(self, x: float, digits: int = 1) -> str:
        text = f"{x:.{digits}f}"
        return text.replace(".", _DECIMAL[self.lang])

    def iso(self, at: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(at))

    def when(self, at: float | None) -> str:
        if at is None:
            return DASH
        if abs(self.now - at) < 20 * 3600:
            return time.strftime("%H:%M:%S", time.localtime(at))
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))

    def clock(self, at: float) -> str:
        return time.strftime("%H:%M:%S", time.localtime(at))

    def ago(self, at: float | None) -> str:
        if at is None:
            return self._("never")
        age = self.now - at
        words = _AGO[self.lang]
        if age < 5:
            return words[0]
        for limit, div, text in ((60, 1, 1), (3600, 60, 2), (86400 * 2, 3600, 3)):
            if age < limit:
                return words[text].format(n=int(age // div))
        return words[4].format(n=int(age // 86400))

    def duration(self, seconds: float) -> str:
        s, units = max(0, int(seconds)), _UNITS[self.lang]
        if s < 60:
            return f"{s} {units[0]}"
        if s < 3600:
            m, rest = divmod(s, 60)
            return f"{m} {units[1]}" + (f" {rest} {units[0]}" if rest else "")
        if s < 86400 * 2:
            h, rest = divmod(s, 3600)
            return f"{h} {units[2]}" + (f" {rest // 60} {units[1]}" if rest >= 60 else "")
        return f"{s // 86400} {units[3]} {(s % 86400) // 3600} {units[2]}"

    def bytes(self, n: float) -> str:
        for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if n >= size:
                return f"{self.num(n / size, 1)}{NBSP}{unit}"
        return f"{int(n)}{NBSP}B"

    def pct(self, part: float, whole: float) -> str:
        return f"{self.num(100 * part / whole, 0)}{NBSP}%" if whole else DASH

    def bar(self, part: float, whole: float) -> Markup:
        """A small bar (SVG: sized by attributes, which the page's CSP allows)."""
        share = min(1.0, part / whole) if whole else 0.0
        level = "alarm" if share > 0.9 else "late" if share > 0.7 else "ok"
        return Markup(
            '<svg class="bar" viewBox="0 0 100 6" preserveAspectRatio="none" aria-hidden="true">'
            f'<rect class="track" width="100" height="6" rx="3"/>'
            f'<rect class="fill c-{level}" width="{share * 100:.1f}" height="6" rx="3"/></svg>'
        )

    def volts(self, mv: float) -> str:
        return f"{self.num(mv / 1000, 2)}{NBSP}V"

    def signal(self, rssi: float | None, snr: float | None) -> str:
        parts = [f"{self.count(rssi)}{NBSP}dBm" if rssi is not None else DASH]
        if snr is not None:
            parts.append(f"{self.num(snr, 1)}{NBSP}dB")
        return " / ".join(parts)

    def values(self, data: Mapping[str, Any]) -> str:
        shown = {k: v for k, v in data.items() if k not in ("type", "age_s", "seq")}
        return ", ".join(f"{k} {_plain(v)}" for k, v in shown.items())

    def command(self, command: Mapping[str, Any]) -> str:
        """A downlink in words: "Identify (30 s)", "Reporting interval: 15 min"..."""
        _ = self._
        kind, name = command.get("type"), command.get("command")
        if kind == "command" and name == "identify":
            return f"{_('Identify')} ({self.duration(command.get('duration_s') or 10)})"
        if kind == "command" and name == "ack_alarm":
            alarm = command.get("alarm")
            return f"{_('Acknowledge alarm')}: {_(label(alarm, 'alarm')) if alarm else _('all')}"
        if kind == "command" and isinstance(name, str):
            return _(label(name, "audit"))
        if kind == "config" and set(command) <= {"type", "report_s"} and "report_s" in command:
            return f"{_('Reporting interval')}: {self.duration(command['report_s'])}"
        if kind == "lighting_profile":
            fields = [f"{k} {v}" for k, v in command.items() if k != "type"]
            return f"{_('Lighting profile')}: {', '.join(fields)}"
        rest = {k: v for k, v in command.items() if k != "type"}
        return f"{kind} {json.dumps(rest, sort_keys=True)}"


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "✓" if value else "✗"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    return str(value)
