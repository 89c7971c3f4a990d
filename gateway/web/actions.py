"""What operators do (POST): node actions become downlinks; alarms are acknowledged.

Each action is turned into one protocol.schema downlink record and validated by
`schema.encode_downlink` before it is queued (gateway/downlinks.py), so a value the node
would refuse never leaves the page. Actions that only make sense for one kind of node are
refused for the others. Acknowledging an alarm records who and why, and also tells the node
(`ack_alarm`), which stops its reminders of that alarm.

Every action, refused ones included, goes to the audit log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.registry import Node
from gateway.web import pages
from gateway.web.auth import SESSION, Session, client_address
from gateway.web.gate import safe_next
from gateway.web.i18n import choose, translator
from gateway.web.site import WEB
from protocol import schema

# action -> the node kinds it applies to (None: every kind)
ACTIONS: dict[str, tuple[str, ...] | None] = {
    "identify": None,
    "reboot": None,
    "interval": None,
    "lighting_profile": ("lighting",),
    "bin_emptied": ("binfill",),
    "recalibrate": ("occupancy",),
}
PROFILE_FIELDS = ("min_level_pct", "max_level_pct", "hold_s", "fade_ms")
# Downlink record types whose fields are node configuration (kept in the registry once the
# node confirms them).
CONFIG_TYPES = ("config", "leak_config", "occupancy_config", "lighting_profile", "binfill_config")
MAX_COMMENT = 500


class ActionError(ValueError):
    """The form asks for something the node cannot take. `message` is an English text of
    the catalog, shown translated; `detail` (the schema's own words) fills its {problem}."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


def _int(form: Mapping[str, Any], name: str) -> int | None:
    raw = str(form.get(name, "")).strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ActionError("Please enter whole numbers.") from None


def build_command(action: str, form: Mapping[str, Any], node: Node) -> dict[str, Any]:
    """The downlink record for `action`, validated against the protocol schema."""
    if action not in ACTIONS:
        raise ActionError("Unknown action.")
    kinds = ACTIONS[action]
    if kinds is not None and node.kind not in kinds:
        raise ActionError("This action does not apply to this kind of node.")
    command: dict[str, Any]
    if action == "identify":
        command = {
            "type": "command",
            "command": "identify",
            "duration_s": _int(form, "duration_s") or 30,
        }
    elif action == "interval":
        minutes = _int(form, "minutes")
        if minutes is None:
            raise ActionError("Please enter whole numbers.")
        command = {"type": "config", "report_s": minutes * 60}
    elif action == "lighting_profile":
        command = {"type": "lighting_profile"}
        for name in PROFILE_FIELDS:
            value = _int(form, name)
            if value is not None:
                command[name] = value
        if len(command) == 1:
            raise ActionError("Fill in at least one value.")
    else:
        command = {"type": "command", "command": action}
    try:
        schema.encode_downlink(command)
    except schema.SchemaError as exc:
        raise ActionError("The node would refuse this value: {problem}", str(exc)) from None
    return command


def config_changes(command: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration a confirmed downlink set on its node (nothing for a command)."""
    if command.get("type") not in CONFIG_TYPES:
        return {}
    return {k: v for k, v in command.items() if k != "type" and v is not None}


def _operator(request: web.Request) -> Session:
    session = request[SESSION]
    if session is None or not session.operator:
        raise web.HTTPForbidden(text="operators only")
    return session


async def node_action(request: web.Request) -> web.StreamResponse:
    state = request.app[WEB]
    node_id = request.match_info["node_id"]
    session = request[SESSION]
    assert session is not None  # the guard let only sessions through
    form = await request.post()
    action = str(form.get("action", ""))
    address = client_address(request)
    if not session.operator:
        await state.audit.record(
            session.username, action or "?", node_id, address=address, outcome="refused"
        )
        raise web.HTTPForbidden(text="operators only")
    node = state.agent.registry.get(node_id)
    if node is None:
        raise web.HTTPNotFound(text="no such node")
    try:
        command = build_command(action, form, node)
    except ActionError as exc:
        await state.audit.record(
            session.username, action or "?", node_id, exc.detail, address=address, outcome="refused"
        )
        message = translator(choose(request))(exc.message).format(problem=exc.detail)
        return await pages.node_detail(request, status=400, error=message)
    downlink = await state.agent.downlinks.enqueue(
        node_id, command, origin=f"web:{session.username}"
    )
    detail = f"#{downlink.id} {json.dumps(command, sort_keys=True)}"
    await state.audit.record(session.username, action, node_id, detail, address=address)
    raise web.HTTPSeeOther(f"/nodes/{node_id}?sent={downlink.id}#downlinks")


async def acknowledge(request: web.Request) -> web.StreamResponse:
    state = request.app[WEB]
    session = _operator(request)
    form = await request.post()
    comment = " ".join(str(form.get("comment", "")).split())[:MAX_COMMENT]
    address = client_address(request)
    try:
        episode_id = int(request.match_info["episode"])
    except ValueError:
        raise web.HTTPNotFound(text="no such alarm") from None
    tr = translator(choose(request))
    if not comment:
        return await pages.alarms(request, status=400, error=tr("Say what was done or seen."))
    episode = await state.alarms.acknowledge(episode_id, session.username, comment, time.time())
    if episode is None:
        await state.audit.record(
            session.username,
            "ack",
            f"alarm {episode_id}",
            comment,
            address=address,
            outcome="refused",
        )
        return await pages.alarms(
            request, status=409, error=tr("This alarm was already acknowledged.")
        )
    target = f"{episode.node_id} {episode.alarm}"
    detail = comment
    if episode.alarm in schema.ALARMS and state.agent.registry.get(episode.node_id) is not None:
        downlink = await state.agent.downlinks.enqueue(
            episode.node_id,
            {"type": "command", "command": "ack_alarm", "alarm": episode.alarm},
            origin=f"web:{session.username}",
        )
        await state.alarms.link_downlink(episode.id, downlink.id)
        detail = f"{comment} (#{downlink.id})"
    await state.audit.record(session.username, "ack", target, detail, address=address)
    state.hub.publish("alarm", [episode.node_id])
    raise web.HTTPSeeOther(safe_next(str(form.get("next", "/alarms"))))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/nodes/{node_id}/actions", node_action)
    app.router.add_post("/alarms/{episode}/ack", acknowledge)
