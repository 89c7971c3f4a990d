"""The field staff page in a real browser (Playwright driving Debian's headless Chromium)
against a running gateway whose simulated nodes report over the real CoAP link (WiFi nodes)
and the LoRa link's decode step (LoRa nodes).

Checked as a person would: log in; the overview counts nodes by health; a node added to the
registry appears and a new battery value shows without reloading; an alarm is acknowledged
with a comment and the node is told; an Identify goes out to a node and the page shows it
queued, sent, then confirmed by the node's next uplink, live; the language switches and
stays; a viewer gets no action buttons; a node in safe mode or reporting an error stands out
in the node list, live, until a later status clears it. Every page is saved as a screenshot
at 390 px and at desktop width (artifacts/screenshots/), and none overflows sideways on a
phone.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from gateway.registry import Node
from tests.web.conftest import SCREENSHOTS
from tests.web.site import ACCOUNTS, WebSite

pytestmark = pytest.mark.timeout(180)

WAIT_MS = 10_000  # the live update arrives within about a second; allow for a slow machine


@pytest.fixture(scope="module")
def reported(site: WebSite) -> WebSite:
    """Every node but the library meter has reported a few times; two alarms are open;
    lamp-park-04 was last heard 40 min ago (late for a 15 min interval)."""
    for node_id, node in site.nodes.items():
        if node_id in ("meter-library", "lamp-park-04"):
            continue
        for _ in range(4):
            node.report()
    site.nodes["bin-grand-place"].report({"type": "alarm", "alarm": "bin_full", "value": 96})
    site.nodes["lamp-park-03"].report({"type": "alarm", "alarm": "lamp_fault"})
    site.lora_clock = lambda: time.time() - 2400
    site.nodes["lamp-park-04"].report()
    site.lora_clock = time.time
    return site


def open_page(browser: Any, site: WebSite, user: str | None = "olivia", width: int = 1280) -> Any:
    context = browser.new_context(
        viewport={"width": width, "height": 900}, base_url=site.base, locale="en-GB"
    )
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    if user is not None:
        page.goto("/")
        assert "/login" in page.url
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", ACCOUNTS[user][1])
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_url(f"{site.base}/")
    return page


@pytest.fixture(scope="module")
def operator(browser: Any, reported: WebSite) -> Iterator[Any]:
    """One operator session for the module (a login costs a memory-hard hash)."""
    page = open_page(browser, reported)
    yield page
    page.context.close()


def live(page: Any) -> None:
    """Wait until the page's event stream is open, and mark the document: a reload would
    lose the mark, so a test can prove an update came without one."""
    page.wait_for_selector("#live.on")
    page.evaluate("window.__sameDocument = true")


def same_document(page: Any) -> bool:
    return bool(page.evaluate("window.__sameDocument === true"))


def test_login_then_the_overview_counts_nodes_by_health(operator: Any) -> None:
    tiles = {
        h: int(operator.inner_text(f".tile.h-{h} .num")) for h in ("ok", "late", "silent", "alarm")
    }
    # alarm: bin (bin_full) and lamp-03 (lamp_fault); late: lamp-04; silent: the library meter
    assert tiles == {"ok": 3, "late": 1, "silent": 1, "alarm": 2}
    alarms = operator.inner_text("[data-live=alarms]")
    assert "Bin full" in alarms and "bin-grand-place" in alarms and "Lamp fault" in alarms
    buffer = operator.inner_text("[data-live=buffer]")
    assert "Disk use" in buffer and "readings waiting" in buffer


def test_nodes_appear_and_update_live(operator: Any, reported: WebSite) -> None:
    operator.goto("/nodes")
    live(operator)
    assert operator.query_selector("tr[data-node='bin-rue-neuve']") is None
    reported.call(
        reported.agent.registry.add(
            Node("bin-rue-neuve", "binfill", "coap", location="Rue Neuve 40")
        )
    )
    row = operator.wait_for_selector("tr[data-node='bin-rue-neuve']")
    assert "Silent" in row.inner_text() and "never" in row.inner_text()

    meter = reported.nodes["meter-town-hall"]
    meter.battery_mv = 3310
    meter.report()
    battery = operator.locator("tr[data-node='meter-town-hall'] [data-field=battery]")
    expect(battery).to_have_text("3.31\u00a0V", timeout=WAIT_MS)
    assert same_document(operator)


# Printable ASCII (all a status error may hold), no space for a phone to break at.
PANIC = "wdt:Core0_panic;LoadProhibited!!"


def test_a_node_in_safe_mode_or_with_an_error_stands_out_live(
    operator: Any, reported: WebSite
) -> None:
    operator.goto("/nodes")
    live(operator)
    library, lamp = reported.nodes["meter-library"], reported.nodes["lamp-park-04"]
    library.error, library.safe_mode = "safe mode: boot loop", True
    library.report(reading=False)  # in safe mode a node sends its status alone
    lamp.error = "<img src=x onerror=alert(1)>"
    lamp.report()

    safe = operator.locator("tr[data-node='meter-library']")
    expect(safe.locator(".badge.n-safe")).to_have_text("Safe mode", timeout=WAIT_MS)
    expect(safe.locator("[data-field=error]")).to_have_text("safe mode: boot loop")
    expect(safe).to_have_class(re.compile(r"\brow-safe\b"))
    # It stands out: the badge is filled, unlike the health badges beside it.
    background = safe.locator(".badge.n-safe").evaluate("e => getComputedStyle(e).backgroundColor")
    assert background == "rgb(122, 16, 16)"
    erring = operator.locator("tr[data-node='lamp-park-04']")
    expect(erring.locator("[data-field=error]")).to_have_text(lamp.error, timeout=WAIT_MS)
    assert erring.locator("img").count() == 0  # shown as text, never as markup
    assert erring.locator(".badge.n-safe").count() == 0
    assert same_document(operator)

    # The node is repaired: its next status carries neither; the page follows without a reload.
    library.error, library.safe_mode = None, False
    library.report()
    expect(safe.locator(".badge.n-safe")).to_have_count(0, timeout=WAIT_MS)
    expect(safe.locator("[data-field=error]")).to_have_count(0)
    expect(erring.locator("[data-field=error]")).to_have_count(1)
    assert same_document(operator)

    operator.goto("/nodes?status=error")
    assert operator.locator("tr[data-node]").evaluate_all(
        "rows => rows.map(r => r.dataset.node)"
    ) == ["lamp-park-04"]
    # Left in safe mode with the longest error a status holds, for the screenshots below.
    library.error, library.safe_mode = PANIC, True
    library.report(reading=False)
    operator.goto("/nodes/meter-library")
    expect(operator.locator("[data-live=node-head] [data-field=error] code")).to_have_text(PANIC)
    assert "needs a visit" in operator.inner_text("[data-live=node-head] [data-field=safe_mode]")


def test_acknowledge_an_alarm_with_a_comment(operator: Any, reported: WebSite) -> None:
    operator.goto("/alarms")
    item = operator.locator("li.alarm.open", has_text="Bin full")
    assert item.count() == 1
    item.locator("input[name=comment]").fill("Emptied by the morning round")
    item.locator("button[type=submit]").click()
    operator.wait_for_url(f"{reported.base}/alarms")
    done = operator.locator("[data-live=alarms-done] li.alarm", has_text="Bin full")
    assert "Acknowledged by olivia" in done.inner_text()
    assert "Emptied by the morning round" in done.inner_text()
    assert operator.locator("[data-live=alarms-open] li.alarm", has_text="Bin full").count() == 0

    # The node is told (ack_alarm stops its reminders); its next uplink confirms it.
    live(operator)
    got = reported.nodes["bin-grand-place"].report()
    assert {"type": "command", "command": "ack_alarm", "alarm": "bin_full"} in got
    reported.nodes["bin-grand-place"].report()
    operator.wait_for_selector("[data-live=alarms-done] li.alarm .badge.d-confirmed")
    assert same_document(operator)

    operator.goto("/audit")
    first = operator.inner_text("table.rows tbody tr")
    assert "olivia" in first and "Acknowledge alarm" in first and "bin_full" in first


def test_a_live_update_keeps_what_the_user_is_typing(operator: Any, reported: WebSite) -> None:
    operator.goto("/alarms")
    live(operator)
    comment = operator.locator("li.alarm.open", has_text="Lamp fault").locator(
        "input[name=comment]"
    )
    comment.fill("Lamp replaced")
    before = operator.get_attribute("body", "data-refreshed")
    reported.nodes["spot-shop-02"].report({"type": "alarm", "alarm": "battery_low", "value": 3300})
    # The page refreshed, but the user is still in the field: that list stays as it is...
    body = operator.locator("body")
    if before is None:
        expect(body).to_have_attribute("data-refreshed", re.compile(r"\d+"))
    else:
        expect(body).not_to_have_attribute("data-refreshed", before)
    assert operator.locator("li.alarm.open", has_text="Battery low").count() == 0
    assert comment.input_value() == "Lamp replaced"
    operator.locator("h1").click()  # ...and catches up once they leave it, text kept
    operator.wait_for_selector("li.alarm.open:has-text('Battery low')")
    lamp = operator.locator("li.alarm.open", has_text="Lamp fault")
    assert lamp.locator("input[name=comment]").input_value() == "Lamp replaced"
    assert same_document(operator)


def test_a_command_is_delivered_to_the_node_and_confirmed(operator: Any, reported: WebSite) -> None:
    node = reported.nodes["meter-town-hall"]
    operator.goto("/nodes/meter-town-hall")
    form = operator.locator("form.action", has=operator.locator("input[value=identify]"))
    form.locator("select[name=duration_s]").select_option("60")
    form.locator("button[type=submit]").click()
    operator.wait_for_url("**/nodes/meter-town-hall?sent=*")
    sent_id = operator.url.split("sent=")[1].split("#")[0]
    row = f"tr[data-downlink='{sent_id}']"
    assert "Queued" in operator.inner_text(f"{row} [data-field=state]")
    assert "Identify (1 min)" in operator.inner_text(row)
    live(operator)

    got = node.report()  # the 2.04 carries the command...
    assert got == [{"type": "command", "command": "identify", "duration_s": 60}]
    assert node.identify_s == 60
    operator.wait_for_selector(f"{row} .badge.d-sent")
    node.report()  # ... and the next uplink confirms it
    operator.wait_for_selector(f"{row} .badge.d-confirmed")
    assert same_document(operator)
    assert reported.downlink_states()[int(sent_id)] == "confirmed"


def test_a_new_reporting_interval_becomes_the_node_configuration(
    operator: Any, reported: WebSite
) -> None:
    node = reported.nodes["spot-pmr-01"]
    operator.goto("/nodes/spot-pmr-01")
    form = operator.locator("form.action", has=operator.locator("input[value=interval]"))
    form.locator("input[name=minutes]").fill("10")
    form.locator("button[type=submit]").click()
    operator.wait_for_url("**/nodes/spot-pmr-01?sent=*")
    node.report()
    node.report()
    assert node.report_s == 600
    operator.wait_for_selector("[data-live=downlinks] .badge.d-confirmed")
    operator.reload()
    assert "10 min" in operator.inner_text("[data-live=node-head]")
    assert reported.agent.registry.get("spot-pmr-01").config["report_s"] == 600  # type: ignore[union-attr]


def test_switch_language(operator: Any) -> None:
    operator.click("footer button[value=fr]")
    operator.wait_for_selector("html[lang=fr]")
    assert "Capteurs" in operator.inner_text("nav.tabs")
    operator.goto("/nodes")
    assert "Dernier contact" in operator.text_content("table.rows thead")
    operator.click("footer button[value=nl]")
    operator.wait_for_selector("html[lang=nl]")
    assert "Sensoren" in operator.inner_text("nav.tabs")
    assert "Laatst gezien" in operator.text_content("table.rows thead")
    operator.click("footer button[value=en]")
    operator.wait_for_selector("html[lang=en]")
    assert "Nodes" in operator.inner_text("nav.tabs")


def test_a_viewer_sees_no_action(browser: Any, reported: WebSite) -> None:
    page = open_page(browser, reported, user="victor")
    try:
        page.goto("/nodes/meter-town-hall")
        assert page.query_selector("#actions") is None
        page.goto("/alarms")
        assert page.query_selector("form.ack") is None
        assert "Only operators can acknowledge alarms." in page.inner_text("main")
    finally:
        page.context.close()


PAGES = [
    ("overview", "/"),
    ("nodes", "/nodes"),
    ("node-meter", "/nodes/meter-town-hall"),
    ("node-lamp", "/nodes/lamp-park-03"),
    ("node-spot", "/nodes/spot-pmr-01"),
    ("node-safe-mode", "/nodes/meter-library"),
    ("alarms", "/alarms"),
    ("gateway", "/gateway"),
    ("audit", "/audit"),
]


@pytest.mark.parametrize("width", [390, 1280])
def test_screenshots_and_nothing_overflows_a_phone(
    browser: Any, operator: Any, reported: WebSite, width: int
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    overflowing = []
    login = open_page(browser, reported, user=None, width=width)
    try:
        login.goto("/login")
        login.screenshot(path=str(SCREENSHOTS / f"login-{width}.png"), full_page=True)
        if not login.evaluate("document.scrollingElement.scrollWidth <= innerWidth"):
            overflowing.append("login")
    finally:
        login.context.close()
    operator.set_viewport_size({"width": width, "height": 900})
    for name, path in PAGES:
        operator.goto(path)
        operator.wait_for_selector("#live.on")
        for summary in operator.query_selector_all("details summary"):
            summary.click()  # show what is folded (configuration, readings)
        operator.evaluate("window.scrollTo(0, 0)")
        operator.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
        if not operator.evaluate("document.scrollingElement.scrollWidth <= innerWidth"):
            overflowing.append(name)
    if width < 600:  # French and Dutch words run longer: they must fit a phone too
        for lang in ("fr", "nl"):
            operator.context.add_cookies([{"name": "gw_lang", "value": lang, "url": reported.base}])
            for name, path in PAGES:
                operator.goto(path)
                if name in ("overview", "node-lamp"):
                    shot = SCREENSHOTS / f"{name}-{width}-{lang}.png"
                    operator.screenshot(path=str(shot), full_page=True)
                if not operator.evaluate("document.scrollingElement.scrollWidth <= innerWidth"):
                    overflowing.append(f"{name} ({lang})")
        operator.context.add_cookies([{"name": "gw_lang", "value": "en", "url": reported.base}])
    assert overflowing == []
    assert all((SCREENSHOTS / f"{name}-{width}.png").stat().st_size > 5000 for name, _ in PAGES)
