"""The node registry: validation, the CLI provisioning path, and the daemon seeing changes."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import registry
from gateway.registry import Node, Registry, RegistryError
from gateway.store import Database, connect
from gateway.store.db import apply_schema

ROOT = Path(__file__).resolve().parents[2]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config), *args],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (Node("", "leak", "coap"), "node id ''"),
        (Node("a b", "leak", "coap"), "node id 'a b'"),
        (Node("n" * 65, "leak", "coap"), "node id"),
        (Node("n1", "Leak", "coap"), "kind 'Leak'"),
        (Node("n1", "leak", "zigbee"), "link 'zigbee': must be one of coap, lora"),
        (Node("n1", "leak", "coap", location="x" * 201), "location is limited"),
    ],
)
def test_invalid_nodes_are_refused(tmp_path: Path, node: Node, message: str) -> None:
    conn = connect(tmp_path / "g.db")
    apply_schema(conn, [registry.SCHEMA])
    with pytest.raises(RegistryError, match=message.replace("(", r"\(")):
        registry.add_node(conn, node)
    assert registry.list_nodes(conn) == []


def test_add_update_remove(tmp_path: Path) -> None:
    conn = connect(tmp_path / "g.db")
    apply_schema(conn, [registry.SCHEMA])
    added = registry.add_node(
        conn, Node("m-01", "leak", "coap", config={"interval_s": 300}, key_ref="m-01"), now=10.0
    )
    assert (added.created_at, added.updated_at) == (10.0, 10.0)
    with pytest.raises(RegistryError, match="already exists"):
        registry.add_node(conn, Node("m-01", "leak", "lora"))
    updated = registry.update_node(conn, "m-01", {"location": "Town hall"}, now=20.0)
    assert updated == Node(
        "m-01", "leak", "coap", "Town hall", "", {"interval_s": 300}, "m-01", 10.0, 20.0
    )
    assert registry.get_node(conn, "m-01") == updated
    with pytest.raises(RegistryError, match="cannot change"):
        registry.update_node(conn, "m-01", {"node_id": "other"})
    with pytest.raises(RegistryError, match="link 'radio'"):
        registry.update_node(conn, "m-01", {"link": "radio"})
    registry.remove_node(conn, "m-01")
    with pytest.raises(RegistryError, match="does not exist"):
        registry.remove_node(conn, "m-01")
    assert registry.version(conn) == 3  # add, update, remove; refused changes left no trace


def test_the_daemon_sees_changes_from_another_process(tmp_path: Path) -> None:
    async def body() -> None:
        db = Database(tmp_path / "g.db")
        await db.open([registry.SCHEMA])
        reg = Registry(db)
        changes: list[int] = []
        reg.listeners.append(lambda: changes.append(len(reg)))
        assert await reg.refresh() is True
        assert await reg.refresh() is False  # nothing changed: nothing reloaded
        other = connect(tmp_path / "g.db")  # as the CLI does
        registry.add_node(other, Node("p-7", "occupancy", "lora"))
        assert reg.get("p-7") is None
        assert await reg.refresh() is True
        assert reg.get("p-7") is not None and reg.get("p-7").kind == "occupancy"  # type: ignore[union-attr]
        await reg.add(Node("l-1", "lighting", "coap"))
        assert [n.node_id for n in reg.nodes()] == ["l-1", "p-7"]
        await reg.update("l-1", notes="pole 4")
        assert reg.get("l-1").notes == "pole 4"  # type: ignore[union-attr]
        await reg.remove("p-7")
        assert reg.get("p-7") is None
        assert changes == [0, 1, 2, 2, 1]
        other.close()
        await db.close()

    asyncio.run(body())


def test_unknown_nodes_are_remembered_within_a_bound(tmp_path: Path) -> None:
    reg = Registry(Database(tmp_path / "g.db"))
    for i in range(registry.UNKNOWN_KEPT + 10):
        reg.note_unknown(f"ghost-{i}", now=float(i))
    reg.note_unknown("ghost-20", now=1000.0)
    assert len(reg.unknown) == registry.UNKNOWN_KEPT
    assert "ghost-0" not in reg.unknown
    seen = reg.unknown["ghost-20"]
    assert (seen.count, seen.first_at, seen.last_at) == (2, 20.0, 1000.0)


def test_cli_provisioning(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('data_dir = "state"\n')
    added = cli(
        config, "node", "add", "m-01", "--kind", "leak", "--link", "coap",
        "--location", "Town hall", "--node-config", '{"interval_s": 300}', "--key-ref", "m-01",
    )  # fmt: skip
    assert (added.returncode, added.stdout) == (0, "added m-01\n"), added.stderr
    again = cli(config, "node", "add", "m-01", "--kind", "leak", "--link", "lora")
    assert again.returncode == 1
    assert again.stderr == "city-gateway: node 'm-01' already exists\n"
    bad = cli(
        config, "node", "add", "m-02", "--kind", "leak", "--link", "coap", "--node-config", "[1]"
    )
    assert (bad.returncode, bad.stderr) == (
        1,
        "city-gateway: --node-config must be a JSON object\n",
    )
    assert cli(config, "node", "update", "m-01", "--notes", "meter in basement").returncode == 0

    listed = cli(config, "node", "list", "--json")
    assert listed.returncode == 0
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert {
        k: row[k] for k in ("node_id", "kind", "link", "location", "notes", "config", "key_ref")
    } == {
        "node_id": "m-01",
        "kind": "leak",
        "link": "coap",
        "location": "Town hall",
        "notes": "meter in basement",
        "config": {"interval_s": 300},
        "key_ref": "m-01",
    }
    # The database and its folder are the service user's alone.
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "gateway.db").stat().st_mode) == 0o600

    assert cli(config, "node", "remove", "m-01").returncode == 0
    gone = cli(config, "node", "remove", "m-01")
    assert (gone.returncode, gone.stderr) == (1, "city-gateway: node 'm-01' does not exist\n")
    assert cli(config, "node", "list").stdout == ""
    usage = cli(config, "node", "add", "m-03", "--kind", "leak", "--link", "zigbee")
    assert usage.returncode == 2 and "invalid choice: 'zigbee'" in usage.stderr
