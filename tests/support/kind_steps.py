"""What a firmware kind's `step()` produced, checked against the shared schema (CPython side).

A step's result holds an optional `reading` and lists of `events` and `alarms`; together they
are the records the node would send, so every kind test checks that they encode and decode
as one uplink.
"""

from __future__ import annotations

from typing import Any

from protocol import schema


def step_records(out: dict[str, Any]) -> list[Any]:
    """Every record of a step's result, checked against the shared schema."""
    recs: list[Any] = [out["reading"]] if out["reading"] else []
    recs += out["events"] + out["alarms"]
    if recs:
        assert schema.decode_uplink(schema.encode_uplink(recs)) is not None
    return recs


def checked_step(out: dict[str, Any]) -> dict[str, Any]:
    """The step's result itself, once its records passed `step_records`."""
    step_records(out)
    return out
