"""The web page's parts without a server: password hashing and the account CLI, node health,
alarm episodes, the login limiter, actions as schema downlinks, SVG charts, translations."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gateway import accounts, cli
from gateway.registry import Node
from gateway.store.db import apply_schema
from gateway.store.readings import SCHEMA as READINGS_SCHEMA
from gateway.store.status import NodeState
from gateway.web import actions, alarms, charts, i18n, model
from gateway.web.auth import LIMIT_PER_USER, LIMIT_WINDOW_S, LoginLimiter
from gateway.web.catalog import CATALOG
from protocol import schema

WEB = Path(__file__).resolve().parents[2] / "gateway" / "web"

# -- accounts -------------------------------------------------------------------------------


def test_passwords_are_hashed_with_scrypt_and_a_salt() -> None:
    first = accounts.hash_password("correct horse battery")
    second = accounts.hash_password("correct horse battery")
    assert first != second  # salted
    scheme, n, r, p, salt, digest = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", "32768", "8", "1")
    assert len(accounts._unb64(salt)) == 16 and len(accounts._unb64(digest)) == 32
    assert accounts.verify_password("correct horse battery", first)
    assert not accounts.verify_password("correct horse batterz", first)
    assert not accounts.verify_password("x", "not a hash")
    assert not accounts.needs_rehash(first)
    weaker = accounts.hash_password("correct horse battery", n=2**10)
    assert accounts.verify_password("correct horse battery", weaker)
    assert accounts.needs_rehash(weaker)


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text('data_dir = "data"\n')
    return config


def run_cli(config: Path, *args: str, stdin: str = "") -> int:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(stdin))
        return cli.main(["--config", str(config), "account", *args])


def test_the_account_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    add = ("add", "olivia", "--role", "operator", "--password-stdin")
    assert run_cli(config, *add, stdin="short\n") == 1
    assert "at least 10 characters" in capsys.readouterr().err
    assert run_cli(config, *add, stdin="long enough pass\n") == 0
    assert run_cli(config, *add, stdin="long enough pass\n") == 1
    assert "already exists" in capsys.readouterr().err
    assert (
        run_cli(
            config,
            "add",
            "Bad Name",
            "--role",
            "viewer",
            "--password-stdin",
            stdin="long enough pass\n",
        )
        == 1
    )
    assert run_cli(config, "role", "olivia", "viewer") == 0
    capsys.readouterr()
    assert run_cli(config, "list") == 0
    assert capsys.readouterr().out == "olivia\tviewer\n"
    conn = sqlite3.connect(tmp_path / "data" / "gateway.db")
    (stored,) = conn.execute("SELECT password FROM web_accounts").fetchone()
    assert "long enough pass" not in stored and accounts.verify_password("long enough pass", stored)
    conn.close()
    assert run_cli(config, "passwd", "olivia", "--password-stdin", stdin="another password\n") == 0
    assert run_cli(config, "remove", "olivia") == 0
    assert run_cli(config, "remove", "olivia") == 1
    assert (tmp_path / "data" / "gateway.db").stat().st_mode & 0o077 == 0


def test_changing_an_account_ends_its_sessions(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None)
    apply_schema(conn, [accounts.SCHEMA])
    accounts.add_account(conn, "olivia", "operator", "long enough pass")
    for n, name in enumerate(("olivia", "olivia", "victor")):
        conn.execute("INSERT INTO web_sessions VALUES (?, ?, 'c', 0, 1e12)", (f"h{n}", name))
    accounts.set_role(conn, "olivia", "viewer")
    assert [r[0] for r in conn.execute("SELECT username FROM web_sessions")] == ["victor"]
    with pytest.raises(accounts.AccountError):
        accounts.set_role(conn, "olivia", "admin")


# -- node health ----------------------------------------------------------------------------


def state(last_seen: float) -> NodeState:
    return NodeState("n", last_seen, "coap", None, None, 3600, "1.0", 1, None)


@pytest.mark.parametrize(
    ("age", "expected"),
    [(0, "ok"), (2 * 900 + 59, "ok"), (2 * 900 + 61, "late"), (6 * 900 + 61, "silent")],
)
def test_health_follows_the_reporting_interval(age: float, expected: str) -> None:
    meter = Node("n", "leak", "coap")  # leak reports every 900 s by default
    assert model.health(meter, state(10_000 - age), 0, 10_000) == expected


def test_health_alarm_wins_and_never_heard_is_silent() -> None:
    bin_node = Node("b", "binfill", "lora", config={"report_s": 60})
    assert model.interval_s(bin_node) == 60
    assert model.health(bin_node, state(10_000), 1, 10_000) == "alarm"
    assert model.health(bin_node, None, 0, 10_000) == "silent"
    assert model.health(bin_node, state(10_000 - 200), 0, 10_000) == "late"


def test_config_values_shown_lose_secrets_and_url_credentials() -> None:
    node = Node(
        "n",
        "leak",
        "coap",
        config={
            "report_s": 60,
            "oscore": {"secret": "ab" * 16},
            "api_token": "t0k3n",
            "site": "http://u:p@h/",
        },
    )
    shown = dict(model.node_config(node))
    assert shown == {"report_s": "60", "site": "http://***@h/"}


# -- alarm episodes -------------------------------------------------------------------------


def alarm_db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    apply_schema(conn, [READINGS_SCHEMA, alarms.SCHEMA])
    return conn


def add_alarm(conn: sqlite3.Connection, seq: int, name: str, active: bool, at: float) -> None:
    data = {"type": "alarm", "alarm": name, "active": active, "age_s": 0, "seq": seq}
    conn.execute(
        "INSERT INTO readings(reading_id, node_id, kind, received_at, age_s, alarm, open, data)"
        " VALUES (?, 'bin', 'alarm', ?, 0, 1, 0, ?)",
        (f"bin:{seq}", at, json.dumps(data)),
    )


def episodes(conn: sqlite3.Connection) -> list[tuple[str, int, float, float | None, int]]:
    return conn.execute(
        "SELECT alarm, active, raised_at, cleared_at, reports FROM web_alarms ORDER BY id"
    ).fetchall()


def test_alarm_records_become_episodes() -> None:
    conn = alarm_db()
    add_alarm(conn, 1, "bin_full", True, 100)
    add_alarm(conn, 2, "bin_full", True, 160)  # a reminder: same episode
    add_alarm(conn, 3, "bin_fire", False, 170)  # a clear with nothing open: ignored
    assert alarms.fold_in(conn) == ["bin", "bin", "bin"]
    assert episodes(conn) == [("bin_full", 1, 100, None, 2)]
    assert alarms.fold_in(conn) == []  # the cursor moved: nothing twice
    add_alarm(conn, 4, "bin_full", False, 200)
    add_alarm(conn, 5, "bin_full", True, 300)  # raised again: a new episode
    alarms.fold_in(conn)
    assert episodes(conn) == [("bin_full", 0, 100, 200, 2), ("bin_full", 1, 300, None, 1)]


# -- login limiter --------------------------------------------------------------------------


def test_the_login_limiter_blocks_an_account_for_the_window() -> None:
    now = [1000.0]
    limiter = LoginLimiter(clock=lambda: now[0])
    for _ in range(LIMIT_PER_USER):
        assert limiter.wait_s("10.0.0.9", "rita") == 0
        limiter.failed("10.0.0.9", "rita")
        now[0] += 1
    assert limiter.wait_s("10.0.0.9", "rita") == pytest.approx(LIMIT_WINDOW_S - LIMIT_PER_USER)
    assert limiter.wait_s("10.0.0.9", "olivia") == 0  # per account, and the address is below
    now[0] += LIMIT_WINDOW_S
    assert limiter.wait_s("10.0.0.9", "rita") == 0


# -- actions --------------------------------------------------------------------------------

LAMP = Node("lamp", "lighting", "lora")
METER = Node("meter", "leak", "coap")


@pytest.mark.parametrize(
    ("node", "action", "form", "record"),
    [
        (
            METER,
            "identify",
            {"duration_s": "60"},
            {"type": "command", "command": "identify", "duration_s": 60},
        ),
        (METER, "reboot", {}, {"type": "command", "command": "reboot"}),
        (METER, "interval", {"minutes": "15"}, {"type": "config", "report_s": 900}),
        (
            LAMP,
            "lighting_profile",
            {"min_level_pct": "5", "max_level_pct": ""},
            {"type": "lighting_profile", "min_level_pct": 5},
        ),
        (
            Node("b", "binfill", "lora"),
            "bin_emptied",
            {},
            {"type": "command", "command": "bin_emptied"},
        ),
        (
            Node("s", "occupancy", "coap"),
            "recalibrate",
            {},
            {"type": "command", "command": "recalibrate"},
        ),
    ],
)
def test_each_action_is_one_schema_downlink(
    node: Node, action: str, form: dict[str, str], record: dict[str, object]
) -> None:
    command = actions.build_command(action, form, node)
    assert command == record
    assert schema.decode_downlink(schema.encode_downlink(command)) == [
        schema.decode_downlink(schema.encode_downlink(record))[0]
    ]


@pytest.mark.parametrize(
    ("node", "action", "form", "message"),
    [
        (METER, "recalibrate", {}, "does not apply"),
        (METER, "interval", {"minutes": "0"}, "would refuse"),
        (METER, "interval", {"minutes": "ten"}, "whole numbers"),
        (METER, "identify", {"duration_s": "7200"}, "would refuse"),
        (LAMP, "lighting_profile", {}, "at least one"),
        (METER, "erase", {}, "Unknown action"),
    ],
)
def test_actions_the_node_would_refuse_are_refused(
    node: Node, action: str, form: dict[str, str], message: str
) -> None:
    with pytest.raises(actions.ActionError, match=message):
        actions.build_command(action, form, node)


def test_a_confirmed_configuration_is_kept_but_a_command_is_not() -> None:
    assert actions.config_changes({"type": "config", "report_s": 600}) == {"report_s": 600}
    assert actions.config_changes({"type": "command", "command": "reboot"}) == {}


# -- charts ---------------------------------------------------------------------------------


def test_a_chart_is_well_formed_svg_with_its_labels_escaped() -> None:
    svg = charts.line_chart(
        [(1000.0, 12.0), (1600.0, 30.0), (1300.0, 18.0)], title="Flow <L/h> & co", unit="L/h"
    )
    root = ET.fromstring(str(svg))
    assert root.tag.endswith("svg") and root.get("viewBox") == "0 0 400 170"
    texts = [t.text for t in root.iter() if t.tag.endswith("text")]
    title = root.find("{http://www.w3.org/2000/svg}title")
    assert "30 L/h" in texts and title is not None and title.text == "Flow <L/h> & co"
    line = next(e for e in root.iter() if e.tag.endswith("polyline"))
    xs = [float(p.split(",")[0]) for p in line.get("points", "").split()]
    assert xs == sorted(xs) and len(xs) == 3  # drawn in time order


def test_a_state_chart_steps_and_names_its_levels() -> None:
    svg = charts.line_chart(
        [(0.0, 0.0), (60.0, 1.0)],
        title="Occupied",
        step=True,
        fixed=(0, 1),
        levels=((0.0, "libre"), (1.0, "occupée")),
    )
    root = ET.fromstring(str(svg))
    line = next(e for e in root.iter() if e.tag.endswith("polyline"))
    assert len(line.get("points", "").split()) == 3  # the step adds a corner
    texts = [t.text for t in root.iter() if t.tag.endswith("text")]
    assert "libre" in texts and texts.count("occupée") == 2  # axis label and latest value


def test_an_empty_chart_says_so() -> None:
    assert "No reading yet." in charts.line_chart([], title="t", empty="No reading yet.")


def test_nice_ranges() -> None:
    assert charts.nice_range(12, 44) == (0, 60, 20)
    assert charts.nice_range(3.64, 3.64)[2] > 0


# -- translations ---------------------------------------------------------------------------

_CALL = re.compile(r"""_\(\s*(?:request,\s*)?(['"])((?:(?!\1).)+)\1\s*\)""")


def texts_in_use() -> set[str]:
    found = set()
    for path in [*WEB.glob("templates/*.html"), *WEB.glob("*.py")]:
        found |= {m.group(2) for m in _CALL.finditer(path.read_text())}
    source = (WEB / "actions.py").read_text()
    found |= set(re.findall(r'ActionError\(\s*"([^"]+)"', source))
    from gateway.web.pages import METRICS

    found |= {title for _, title, _, _, _ in METRICS.values()} | {"Readings", "Battery (V)"}
    found |= {text for group in i18n.LABELS.values() for text in group.values()}
    return found


def test_every_text_is_translated_with_the_same_placeholders() -> None:
    used = texts_in_use()
    assert len(used) > 150
    missing = sorted(used - set(CATALOG))
    assert missing == []
    for english, translations in CATALOG.items():
        wanted = set(re.findall(r"{\w+}", english))
        for text in translations:
            assert set(re.findall(r"{\w+}", text)) == wanted, english
            assert text.strip(), english


def test_the_language_comes_from_the_cookie_or_the_browser() -> None:
    assert i18n.from_accept_language("nl-BE,nl;q=0.9,fr;q=0.8") == "nl"
    assert i18n.from_accept_language("de-DE,fr;q=0.5,en;q=0.7") == "en"
    assert i18n.from_accept_language("fr-BE, nl") == "fr"
    assert i18n.from_accept_language("xx, q=bad") == "en"
    assert i18n.translator("fr")("Open alarms") == "Alarmes ouvertes"
    assert i18n.translator("nl")("not in the catalog") == "not in the catalog"


def test_numbers_and_times_read_the_way_each_language_writes_them() -> None:
    en, fr, nl = (i18n.Formatter(lang, now=100_000.0) for lang in ("en", "fr", "nl"))
    nbsp = "\u00a0"  # a number and its unit never part on a narrow screen
    volts = (en.volts(3640), fr.volts(3640), nl.volts(3640))
    assert volts == (f"3.64{nbsp}V", f"3,64{nbsp}V", f"3,64{nbsp}V")
    assert (en.count(12345), nl.count(12345)) == ("12,345", "12.345")
    assert (en.ago(100_000 - 180), fr.ago(100_000 - 180), nl.ago(100_000 - 180)) == (
        "3 min ago",
        "il y a 3 min",
        "3 min geleden",
    )
    assert en.ago(None) == "never" and fr.ago(None) == "jamais"
    assert en.duration(900) == "15 min" and nl.duration(7200) == "2 u"
    assert en.bytes(3 * 1024 * 1024) == f"3.0{nbsp}MiB"
    assert fr.signal(-97, 6.5) == f"-97{nbsp}dBm / 6,5{nbsp}dB"
    assert fr.command({"type": "command", "command": "identify", "duration_s": 30}) == (
        "Identifier (30 s)"
    )
    assert nl.command({"type": "config", "report_s": 600}) == "Meetinterval: 10 min"


# -- assets ---------------------------------------------------------------------------------


def test_every_asset_ships_in_the_package() -> None:
    """Nothing is fetched from elsewhere: no CDN, no web font, no other origin."""
    for path in [*WEB.glob("templates/*.html"), *WEB.glob("static/*")]:
        text = path.read_text()
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path.name
        assert "@import" not in text and "url(" not in text, path.name
    assert {p.name for p in WEB.glob("static/*")} == {"app.css", "app.js", "icon.svg"}
    assert sum(p.stat().st_size for p in WEB.glob("static/*")) < 24_000
