"""The web page with a plain HTTP client against a running gateway (127.0.0.1): logins,
sessions and their cookies, CSRF, roles, the login rate limit, the audit log, no secret on any
page, actions checked against the schema, the node filters. Statuses, headers and cookie
attributes are checked as sent.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import re
import sqlite3
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import accounts, cli
from tests.gateway.conftest import make_tls
from tests.gateway.link_support import secret_of
from tests.web.client import Client
from tests.web.site import ACCOUNTS, NODES, WebSite

MQTT_PASSWORD = "mqtt-Pa55word-do-not-show"
NGSI_SECRET = "ngsi-Secret-do-not-show"
PAGES = ["/", "/nodes", "/alarms", "/gateway", "/audit", *(f"/nodes/{n}" for n in NODES)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebSite]:
    tmp = tmp_path_factory.mktemp("websec")
    (tmp / "mqtt.pw").write_text(MQTT_PASSWORD + "\n")
    web_site = WebSite(
        tmp,
        sinks={
            "mqtt": {"enabled": True, "username": "gateway", "password_file": "mqtt.pw"},
            "ngsi_ld": {"url": f"http://broker:{NGSI_SECRET}@127.0.0.1:1026"},
        },
    )
    for node in ("meter-town-hall", "bin-grand-place", "lamp-park-03"):
        web_site.nodes[node].report()
    web_site.nodes["bin-grand-place"].report({"type": "alarm", "alarm": "bin_full", "value": 97})
    yield web_site
    web_site.close()


def logged_in(site: WebSite, user: str) -> Client:
    client = Client(site.base)
    reply = client.login(user, ACCOUNTS[user][1])
    assert reply.status == 303 and reply.location == "/", reply.body
    return client


def downlink_count(site: WebSite) -> int:
    return len(site.downlink_states())


def audit_rows(site: WebSite) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(site.gw.config.database_path) as conn:
        return conn.execute(
            "SELECT username, action, target, outcome FROM web_audit ORDER BY id"
        ).fetchall()


def test_every_page_needs_a_login(site: WebSite) -> None:
    client = Client(site.base)
    for path in PAGES:
        reply = client.get(path)
        assert reply.status == 303, path
        assert reply.location is not None and reply.location.startswith("/login?next=")
        assert site.nodes["meter-town-hall"].node_id not in reply.body
    assert client.get("/events").status == 401
    # What needs no login: the login page, the assets, monitoring.
    assert client.get("/login").status == 200
    assert client.get("/static/app.js").status == 200
    assert client.get("/healthz").status == 200
    assert client.get("/metrics").status == 200
    assert client.get("/no-such-page").status == 404  # routes that are not the page's: untouched


def test_state_changes_are_refused_without_a_login(site: WebSite) -> None:
    client = Client(site.base)
    token = client.csrf("/login")  # even with a valid pre-login token
    before = downlink_count(site)
    for path, form in [
        ("/nodes/meter-town-hall/actions", {"action": "reboot", "csrf": token}),
        ("/alarms/1/ack", {"comment": "x", "csrf": token}),
        ("/logout", {"csrf": token}),
    ]:
        assert client.post(path, form).status == 401, path
    assert downlink_count(site) == before


def test_the_session_cookie_is_strict_and_only_its_hash_is_stored(site: WebSite) -> None:
    client = Client(site.base)
    reply = client.login("olivia", ACCOUNTS["olivia"][1])
    (session,) = [c for c in reply.set_cookies() if c.startswith("gw_session=")]
    attributes = {a.strip().split("=")[0].lower() for a in session.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "SameSite=Strict" in session and "Path=/" in session
    assert "secure" not in attributes  # plain HTTP here; see the HTTPS test
    token = client.cookies["gw_session"]
    with sqlite3.connect(site.gw.config.database_path) as conn:
        stored = [row[0] for row in conn.execute("SELECT token_hash FROM web_sessions")]
    assert hashlib.sha256(token.encode()).hexdigest() in stored
    assert token not in stored


def test_a_state_change_needs_the_session_csrf_token(site: WebSite) -> None:
    olivia = logged_in(site, "olivia")
    victor = logged_in(site, "victor")
    token = olivia.csrf("/nodes/meter-town-hall")
    other = victor.csrf("/nodes/meter-town-hall")
    path = "/nodes/meter-town-hall/actions"
    before = downlink_count(site)
    assert olivia.post(path, {"action": "identify"}).status == 403
    assert olivia.post(path, {"action": "identify", "csrf": "x" * 43}).status == 403
    assert olivia.post(path, {"action": "identify", "csrf": other}).status == 403
    evil = {"Origin": "http://evil.example"}
    assert olivia.post(path, {"action": "identify", "csrf": token}, headers=evil).status == 403
    assert downlink_count(site) == before

    accepted = olivia.post(path, {"action": "identify", "csrf": token})
    assert accepted.status == 303 and accepted.location is not None
    assert accepted.location.startswith("/nodes/meter-town-hall?sent=")
    header = olivia.post(path, {"action": "reboot"}, headers={"X-CSRF-Token": token})
    assert header.status == 303
    assert downlink_count(site) == before + 2
    refused = [r for r in audit_rows(site) if r[1] == "csrf"]
    assert len(refused) == 4 and {r[0] for r in refused} == {"olivia"}


def test_the_login_form_needs_its_token(site: WebSite) -> None:
    client = Client(site.base)
    form = {"username": "olivia", "password": ACCOUNTS["olivia"][1], "next": "/"}
    assert client.post("/login", form).status == 403
    client.csrf("/login")  # the pre-login cookie is set, but the form lacks its value
    assert client.post("/login", {**form, "csrf": "y" * 32}).status == 403
    assert "gw_session" not in client.cookies


def test_a_viewer_cannot_act(site: WebSite) -> None:
    victor = logged_in(site, "victor")
    token = victor.csrf("/nodes/meter-town-hall")
    before = downlink_count(site)
    reply = victor.post("/nodes/meter-town-hall/actions", {"action": "reboot", "csrf": token})
    assert reply.status == 403
    assert victor.post("/alarms/1/ack", {"comment": "seen", "csrf": token}).status == 403
    assert downlink_count(site) == before
    page = victor.get("/nodes/meter-town-hall").body
    assert 'id="actions"' not in page and "/actions" not in page
    assert ("victor", "reboot", "meter-town-hall", "refused") in audit_rows(site)


def test_an_operator_acknowledges_an_alarm_and_the_node_is_told(site: WebSite) -> None:
    olivia = logged_in(site, "olivia")
    page = olivia.get("/alarms").body
    episode = page.split('action="/alarms/')[1].split("/ack")[0]
    token = olivia.csrf("/alarms")
    assert olivia.post(f"/alarms/{episode}/ack", {"comment": "", "csrf": token}).status == 400
    reply = olivia.post(f"/alarms/{episode}/ack", {"comment": "Bin emptied", "csrf": token})
    assert reply.status == 303 and reply.location == "/alarms"
    again = olivia.post(f"/alarms/{episode}/ack", {"comment": "twice", "csrf": token})
    assert again.status == 409
    got = site.nodes["bin-grand-place"].report()
    assert {"type": "command", "command": "ack_alarm", "alarm": "bin_full"} in got
    assert ("olivia", "ack", "bin-grand-place bin_full", "ok") in audit_rows(site)


def test_actions_are_checked_against_the_schema_and_the_node_kind(site: WebSite) -> None:
    olivia = logged_in(site, "olivia")
    token = olivia.csrf("/nodes/meter-town-hall")
    before = downlink_count(site)
    path = "/nodes/meter-town-hall/actions"
    too_long = olivia.post(path, {"action": "interval", "minutes": "100000", "csrf": token})
    assert too_long.status == 400 and "would refuse" in too_long.body
    wrong_kind = olivia.post(path, {"action": "bin_emptied", "csrf": token})
    assert wrong_kind.status == 400 and "does not apply" in wrong_kind.body
    unknown = olivia.post(path, {"action": "format_disk", "csrf": token})
    assert unknown.status == 400
    assert downlink_count(site) == before
    lamp = "/nodes/lamp-park-03/actions"
    profile = {"action": "lighting_profile", "min_level_pct": "80", "max_level_pct": "20"}
    assert olivia.post(lamp, {**profile, "csrf": token}).status == 400  # min above max
    profile.update(min_level_pct="10", max_level_pct="90", hold_s="120")
    assert olivia.post(lamp, {**profile, "csrf": token}).status == 303
    (queued,) = site.call(site.agent.downlinks.list("lamp-park-03", limit=1))
    assert dict(queued.command) == {
        "type": "lighting_profile",
        "min_level_pct": 10,
        "max_level_pct": 90,
        "hold_s": 120,
    }
    assert queued.origin == "web:olivia"


def test_logins_are_rate_limited(site: WebSite) -> None:
    with sqlite3.connect(site.gw.config.database_path, isolation_level=None) as conn:
        accounts.add_account(conn, "rita", "viewer", "rita-real-password")
    client = Client(site.base)
    for _ in range(5):
        assert client.login("rita", "not-her-password").status == 401
    blocked = client.login("rita", "rita-real-password")
    assert blocked.status == 429
    assert 0 < int(blocked.headers["Retry-After"]) <= 301
    assert "gw_session" not in client.cookies
    assert ("rita", "login", "", "blocked") in audit_rows(site)
    assert logged_in(site, "victor")  # another account from the same address still can


def test_an_expired_session_is_refused(site: WebSite) -> None:
    client = logged_in(site, "victor")
    assert client.get("/").status == 200
    hashed = hashlib.sha256(client.cookies["gw_session"].encode()).hexdigest()
    with sqlite3.connect(site.gw.config.database_path) as conn:
        conn.execute("UPDATE web_sessions SET expires_at = 0 WHERE token_hash = ?", (hashed,))
    assert client.get("/").status == 303


def test_a_weaker_hash_is_upgraded_at_login(site: WebSite) -> None:
    weak = accounts.hash_password("weak-hash-password", n=2**10)
    with sqlite3.connect(site.gw.config.database_path, isolation_level=None) as conn:
        conn.execute("INSERT INTO web_accounts VALUES ('walter', 'viewer', ?, 0, 0)", (weak,))
    assert Client(site.base).login("walter", "weak-hash-password").status == 303
    with sqlite3.connect(site.gw.config.database_path) as conn:
        (stored,) = conn.execute(
            "SELECT password FROM web_accounts WHERE username = 'walter'"
        ).fetchone()
    assert stored != weak and not accounts.needs_rehash(stored)
    assert accounts.verify_password("weak-hash-password", stored)


def test_logout_ends_the_session(site: WebSite) -> None:
    client = logged_in(site, "victor")
    token = client.cookies["gw_session"]
    assert client.post("/logout", {"csrf": client.csrf("/")}).status == 303
    client.cookies["gw_session"] = token  # replaying the old cookie
    assert client.get("/").status == 303


def test_a_removed_account_loses_its_session_at_once(site: WebSite, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{site.gw.config.data_dir}"\n')
    stdin = io.StringIO("temp-password-123\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", stdin)
        assert (
            cli.main(
                [
                    "--config",
                    str(config),
                    "account",
                    "add",
                    "tina",
                    "--role",
                    "operator",
                    "--password-stdin",
                ]
            )
            == 0
        )
    client = Client(site.base)
    assert client.login("tina", "temp-password-123").status == 303
    assert client.get("/").status == 200
    assert cli.main(["--config", str(config), "account", "remove", "tina"]) == 0
    assert client.get("/").status == 303


def test_no_secret_reaches_a_page(site: WebSite) -> None:
    olivia = logged_in(site, "olivia")
    client = Client(site.base)
    client.login("olivia", "a wrong password")  # logged and audited: must not leak either
    keys = site.gw.config.security.keys_dir
    secrets = {MQTT_PASSWORD, NGSI_SECRET, ACCOUNTS["olivia"][1], "scrypt$"}
    for node, (_, kid, _, _) in NODES.items():
        secret = secret_of(kid)
        secrets |= {secret.hex(), secret.hex().upper()}
        stored = json.loads((keys / node / "secret.json").read_text())
        secrets |= {str(v) for v in stored.values() if isinstance(v, str) and len(v) >= 8}
    seen = "".join(olivia.get(path).body for path in PAGES)
    leaked = sorted(s for s in secrets if s in seen)
    assert leaked == []
    gateway_page = olivia.get("/gateway").body
    assert "http://***@127.0.0.1:1026" in gateway_page  # the URL shown, its credentials not
    assert "mqtt.pw" in gateway_page  # where the password lives may show, not what it is


def test_the_node_list_filters_by_kind_status_and_link(site: WebSite) -> None:
    victor = logged_in(site, "victor")

    def listed(query: str) -> list[str]:
        return re.findall(r'<tr data-node="([^"]+)"', victor.get(f"/nodes?{query}").body)

    assert listed("kind=lighting") == ["lamp-park-03", "lamp-park-04"]
    assert listed("link=lora&kind=occupancy") == ["spot-shop-02"]
    assert listed("status=alarm") == ["bin-grand-place"]
    assert "meter-library" in listed("status=silent")
    assert "meter-town-hall" not in listed("status=silent")
    assert listed("q=josaphat") == ["lamp-park-03", "lamp-park-04"]
    assert listed("kind=leak&status=ok") == ["meter-town-hall"]


def test_assets_are_served_gzipped_and_revalidated(site: WebSite) -> None:
    original = (Path(__file__).parents[2] / "gateway/web/static/app.css").read_bytes()
    conn = http.client.HTTPConnection("127.0.0.1", int(site.base.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("GET", "/static/app.css", headers={"Accept-Encoding": "gzip"})
        reply = conn.getresponse()
        body = reply.read()
        assert reply.status == 200 and reply.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(body) == original and len(body) < len(original) / 2
        assert reply.headers["Content-Type"] == "text/css; charset=utf-8"
        assert "max-age" in reply.headers["Cache-Control"]
        conn.request("GET", "/static/app.css", headers={"If-None-Match": reply.headers["ETag"]})
        again = conn.getresponse()
        again.read()
        assert again.status == 304
        conn.request("GET", "/static/app.css")
        plain = conn.getresponse()
        assert plain.read() == original and "Content-Encoding" not in plain.headers
    finally:
        conn.close()
    page = logged_in(site, "victor").get("/").body
    version = re.search(r'href="/static/app.css\?v=(\w+)"', page)
    assert version is not None and f'"{version.group(1)}"' == reply.headers["ETag"]


def test_pages_carry_the_security_headers(site: WebSite) -> None:
    olivia = logged_in(site, "olivia")
    reply = olivia.get("/")
    csp = reply.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert reply.headers["X-Frame-Options"] == "DENY"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["Cache-Control"] == "no-store"
    assert "<script>" not in reply.body and "style=" not in reply.body  # CSP-clean markup


def test_login_redirects_stay_on_the_site(site: WebSite) -> None:
    client = Client(site.base)
    token = client.csrf("/login")
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        form = {
            "username": "victor",
            "password": ACCOUNTS["victor"][1],
            "csrf": token,
            "next": target,
        }
        reply = client.post("/login", form)
        assert reply.status == 303 and reply.location == "/", target
        client = Client(site.base)
        token = client.csrf("/login")


def test_under_https_the_cookies_are_secure_and_host_only(tmp_path: Path) -> None:
    """Also: an open event stream (a phone left on a page) does not hold up shutdown."""
    tls = make_tls(tmp_path)
    (tmp_path / "gw").mkdir()
    web_site = WebSite(tmp_path / "gw", tls=(tls.cert, tls.key))
    context = ssl.create_default_context(cafile=str(tls.ca))
    stream = None
    try:
        client = Client(web_site.base, context=context)
        reply = client.login("olivia", ACCOUNTS["olivia"][1])
        assert reply.status == 303
        (session,) = [c for c in reply.set_cookies() if "gw_session=" in c]
        assert session.startswith("__Host-gw_session=")
        assert "Secure" in session and "HttpOnly" in session and "SameSite=Strict" in session
        assert client.get("/").status == 200

        assert web_site.agent.http is not None
        stream = http.client.HTTPSConnection(
            "127.0.0.1", web_site.agent.http.port, context=context, timeout=10
        )
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        stream.request("GET", "/events", headers={"Cookie": cookie})
        events = stream.getresponse()
        assert events.status == 200
        assert events.headers["Content-Type"] == "text/event-stream"
        assert events.readline() == b"retry: 5000\n"
        started = time.monotonic()
        web_site.close()
        assert time.monotonic() - started < 5.0
    finally:
        if stream is not None:
            stream.close()
        web_site.close()


def test_a_node_in_safe_mode_or_reporting_an_error_stands_out_until_a_status_clears_it(
    site: WebSite,
) -> None:
    victor = logged_in(site, "victor")
    spot = site.nodes["spot-pmr-01"]
    # Printable ASCII, as the schema allows, but markup if a page took it as such.
    spot.error, spot.safe_mode = '<b onclick="x()">boot&loop</b>', True
    spot.report(reading=False)  # safe mode: the status alone

    def row(node_id: str) -> str:
        body = victor.get("/nodes").body
        match = re.search(rf'<tr data-node="{node_id}" class="([^"]*)">(.*?)</tr>', body, re.S)
        assert match, node_id
        return match.group(1) + "|" + match.group(2)

    def listed(query: str) -> list[str]:
        return re.findall(r'<tr data-node="([^"]+)"', victor.get(f"/nodes?{query}").body)

    def safe_gauge() -> float:
        text = Client(site.base).get("/metrics").body
        match = re.search(r"^city_gateway_nodes_safe_mode (\S+)$", text, re.M)
        assert match, "no safe-mode gauge"
        return float(match.group(1))

    escaped = "&lt;b onclick=&#34;x()&#34;&gt;boot&amp;loop&lt;/b&gt;"
    shown = row("spot-pmr-01")
    assert "row-safe" in shown and "row-error" in shown
    assert 'data-field="safe_mode">Safe mode</span>' in shown
    assert 'data-field="error" title="Error reported by the node, ' in shown
    assert f">{escaped}</span>" in shown
    assert "<b onclick" not in victor.get("/nodes").body
    assert "row-safe" not in row("meter-town-hall")
    assert listed("status=safe_mode") == ["spot-pmr-01"]
    assert listed("status=error") == ["spot-pmr-01"]
    detail = victor.get("/nodes/spot-pmr-01").body
    assert 'role="alert" data-field="safe_mode">The node restarted too often' in detail
    assert f'<code class="break">{escaped}</code>' in detail
    overview = victor.get("/").body
    assert '<a href="/nodes?status=safe_mode" data-field="safe_mode">1 in safe mode</a>' in overview
    assert '<a href="/nodes?status=error" data-field="error">1 reporting an error</a>' in overview
    assert safe_gauge() == 1
    french = Client(site.base)
    french.cookies = dict(victor.cookies, gw_lang="fr")
    assert ">Mode sans échec</span>" in french.get("/nodes").body

    # Back to normal, and an error of another kind: safe mode goes, the error is the new one.
    spot.error, spot.safe_mode = "cfg refused: report_s", False
    spot.report()
    shown = row("spot-pmr-01")
    assert "row-safe" not in shown and "row-error" in shown
    assert 'data-field="safe_mode"' not in shown and ">cfg refused: report_s</span>" in shown
    assert listed("status=safe_mode") == [] and listed("status=error") == ["spot-pmr-01"]
    assert safe_gauge() == 0
    # An uplink without a status says nothing about the error: it stays.
    spot.report(status=False)
    assert ">cfg refused: report_s</span>" in row("spot-pmr-01")
    # The next status without it clears it.
    spot.error = None
    spot.report()
    shown = row("spot-pmr-01")
    assert "row-error" not in shown and 'data-field="error"' not in shown
    assert listed("status=error") == []
    assert "in safe mode" not in victor.get("/").body
    assert 'data-field="error"' not in victor.get("/nodes/spot-pmr-01").body


def test_a_page_learns_of_changes_made_before_its_stream_started(site: WebSite) -> None:
    """Nobody is subscribed between a page's rendering and its stream's start, so no change
    event can tell it of a change in between: the stream's hello carries the version the
    page must compare with the one it was rendered at."""
    olivia = logged_in(site, "olivia")

    def rendered_at() -> int:
        match = re.search(r'data-live-version="(\d+)"', olivia.get("/nodes/spot-pmr-01").body)
        assert match, "no live version on the page"
        return int(match.group(1))

    def hello() -> int:
        assert site.agent.http is not None
        stream = http.client.HTTPConnection("127.0.0.1", site.agent.http.port, timeout=10)
        try:
            cookie = "; ".join(f"{k}={v}" for k, v in olivia.cookies.items())
            stream.request("GET", "/events", headers={"Cookie": cookie})
            events = stream.getresponse()
            assert events.readline() == b"retry: 5000\n"
            assert events.readline() == b"event: hello\n"
            data = events.readline()
            assert data.startswith(b"data: ")
            return int(json.loads(data[len(b"data: ") :])["version"])
        finally:
            stream.close()

    page = rendered_at()
    assert hello() == page  # nothing happened: the page is current, no refresh
    site.nodes["spot-pmr-01"].report()  # no stream open: no event for anyone
    assert hello() > page  # the page's script refreshes on this
    assert rendered_at() == hello()
