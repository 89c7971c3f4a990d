"""`city-node provision`, all or nothing: a failure at each step leaves neither the node nor the
gateway half-provisioned. The node is a sim rig board reached over socket:// (mpremote's
transport), the gateway side is a real registry database and real key folders; failures are
real where they can be (the node's power cut mid-step, a registration that collides), and
raised at the step boundary otherwise."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import load
from hil.gateway import GatewayProcess
from hil.rig import SimDUT, SimRig
from tools.cli import main
from tools.provision import STEPS, GatewaySide, NodeSpec, Provisioner, ProvisionError

OLD_CONFIG = {"node_id": "spare", "kind": "leak", "status_s": 3600}


@pytest.fixture
def node(sim: SimRig) -> SimDUT:
    dut = sim.dut("leak-9", kind="leak", start=False, speed=50)
    (dut.folder / "config.json").write_text(json.dumps(OLD_CONFIG))
    dut.start()
    return dut


def spec(sim: SimRig, **changes: object) -> NodeSpec:
    fields: dict[str, object] = {
        "node_id": "leak-9",
        "kind": "leak",
        "link": "coap",
        "location": "Ecole Jaures, meter room",
        "report_s": 600,
        "wifi_ssid": "hil-rig",
        "wifi_password": "hil-rig-password",
        "gateway_host": "127.0.0.1",
        "gateway_port": sim.gateway.settings.coap_port,
    }
    fields.update(changes)
    return NodeSpec(**fields)  # type: ignore[arg-type]


def provisioner(
    sim: SimRig, dut: SimDUT, fail: Callable[[str], None] | None = None, **kw: object
) -> Provisioner:
    side = GatewaySide(load(sim.gateway.config_path))
    return Provisioner(
        dut.port,
        side,
        wait_s=10,
        checkpoint=fail or (lambda s: None),
        say=lambda s: None,
        **kw,  # type: ignore[arg-type]
    )


def registry_rows(gateway: GatewayProcess) -> list[tuple[object, ...]]:
    if not gateway.database.exists():
        return []
    conn = sqlite3.connect(gateway.database)
    try:
        return list(conn.execute("SELECT node_id, kind, location, key_ref FROM nodes"))
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def key_folders(gateway: GatewayProcess) -> list[str]:
    if not gateway.keys_dir.is_dir():
        return []
    return sorted(p.name for p in gateway.keys_dir.iterdir())


def node_files(dut: SimDUT) -> tuple[object, bool]:
    config = dut.folder / "config.json"
    current = json.loads(config.read_text()) if config.exists() else None
    return current, (dut.folder / "config.json.new").exists()


def test_provisioning_writes_node_and_gateway_together(
    sim: SimRig, node: SimDUT, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "provision", "--port", node.port, "--gateway-config", str(sim.gateway.config_path),
            "--node-id", "leak-9", "--kind", "leak", "--link", "coap", "--wifi-ssid", "hil-rig",
            "--wifi-password", "hil-rig-password", "--gateway-host", "127.0.0.1",
            "--gateway-port", str(sim.gateway.settings.coap_port), "--report-s", "600",
            "--location", "Ecole Jaures, meter room",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| node          leak-9" in out
    assert "| OSCORE kid    01" in out
    assert "| device id     5e0000000001" in out
    assert "leak-9 provisioned and registered" in out
    config = json.loads((node.folder / "config.json").read_text())
    secret = json.loads((sim.gateway.keys_dir / "leak-9" / "secret.json").read_text())
    settings = json.loads((sim.gateway.keys_dir / "leak-9" / "settings.json").read_text())
    # the node and the gateway hold the same fresh key material: 16-byte secret, 8-byte salt
    assert config["oscore"]["secret"] == secret["secret_hex"]
    assert len(bytes.fromhex(secret["secret_hex"])) == 16
    assert config["oscore"]["salt"] == secret["salt_hex"]
    assert len(bytes.fromhex(secret["salt_hex"])) == 8
    assert config["oscore"]["sender_id"] == settings["recipient-id_hex"] == "01"
    assert config["kind_config"] == {"report_s": 600}
    assert config["location"] == "Ecole Jaures, meter room"
    assert (sim.gateway.keys_dir / "leak-9" / "secret.json").stat().st_mode & 0o777 == 0o600
    assert registry_rows(sim.gateway) == [("leak-9", "leak", "Ecole Jaures, meter room", "leak-9")]
    assert not (node.folder / "config.json.new").exists()
    # the secret never reaches the terminal
    assert secret["secret_hex"] not in out
    # the node restarted with its identity
    node.console.wait_for(r"node: boot \d+ \((power_on|hard)\)", 20)


def _cut_power(dut: SimDUT, at: str) -> Callable[[str], None]:
    def checkpoint(step: str) -> None:
        if step == at:
            dut.power_cut(0.2)  # the node reboots while the step talks to it

    return checkpoint


def _raise(at: str) -> Callable[[str], None]:
    def checkpoint(step: str) -> None:
        if step == at:
            raise KeyboardInterrupt  # the technician gives up (or the laptop dies) right here

    return checkpoint


@pytest.mark.parametrize("step", [s for s in STEPS if s != "reset"])
def test_a_failure_at_any_step_leaves_nothing_half_done(
    sim: SimRig, node: SimDUT, step: str
) -> None:
    before_files = node_files(node)
    with pytest.raises((ProvisionError, KeyboardInterrupt)):
        provisioner(sim, node, _raise(step)).run(spec(sim))
    assert registry_rows(sim.gateway) == []
    assert key_folders(sim.gateway) == []
    assert node_files(node) == before_files == (OLD_CONFIG, False)


@pytest.mark.parametrize("step", ["stage", "activate"])
def test_a_power_cut_on_the_node_mid_step_is_rolled_back(
    sim: SimRig, node: SimDUT, step: str
) -> None:
    with pytest.raises(ProvisionError) as failed:
        provisioner(sim, node, _cut_power(node, step)).run(spec(sim))
    assert failed.value.step == step, str(failed.value)
    assert registry_rows(sim.gateway) == []
    assert key_folders(sim.gateway) == []
    # the node came back with its old config, and the staged file was cleaned up
    assert node_files(node) == (OLD_CONFIG, False)


def test_a_registration_that_collides_is_rolled_back(sim: SimRig, node: SimDUT) -> None:
    def someone_else_registers(step: str) -> None:
        if step == "register":
            done = sim.gateway.cli("node", "add", "leak-9", "--kind", "leak", "--link", "lora",
                                   "--location", "elsewhere")  # fmt: skip
            assert done.returncode == 0, done.stderr

    with pytest.raises(ProvisionError, match=r"step 'register'.*already exists"):
        provisioner(sim, node, someone_else_registers).run(spec(sim))
    # the other registration stands, untouched; no key folder of ours; the node unchanged
    assert registry_rows(sim.gateway) == [("leak-9", "leak", "elsewhere", None)]
    assert key_folders(sim.gateway) == []
    assert node_files(node) == (OLD_CONFIG, False)


def test_replace_rekeys_and_a_failed_replace_restores_the_old_keys(
    sim: SimRig, node: SimDUT
) -> None:
    first = provisioner(sim, node, reset=False).run(spec(sim))
    folder = sim.gateway.keys_dir / "leak-9"
    old_secret = (folder / "secret.json").read_bytes()
    old_config = json.loads((node.folder / "config.json").read_text())
    # a second provision without --replace is refused before anything is written
    with pytest.raises(ProvisionError, match=r"already registered.*--replace"):
        provisioner(sim, node).run(spec(sim))
    # --replace failing at activation: the previous keys and row come back
    with pytest.raises(KeyboardInterrupt):
        provisioner(sim, node, _raise("activate"), replace=True).run(spec(sim, location="moved"))
    assert (folder / "secret.json").read_bytes() == old_secret
    assert registry_rows(sim.gateway) == [("leak-9", "leak", "Ecole Jaures, meter room", "leak-9")]
    assert json.loads((node.folder / "config.json").read_text()) == old_config
    assert [p.name for p in sim.gateway.keys_dir.iterdir()] == ["leak-9"]
    # --replace going through: new secret, same key id
    second = provisioner(sim, node, replace=True, reset=False).run(spec(sim, location="moved"))
    assert second.kid == first.kid == b"\x01"
    assert (folder / "secret.json").read_bytes() != old_secret
    assert registry_rows(sim.gateway) == [("leak-9", "leak", "moved", "leak-9")]


def test_a_refused_config_writes_nothing(sim: SimRig, node: SimDUT) -> None:
    with pytest.raises(ProvisionError, match=r"step 'prepare'.*firmware would refuse.*report_s"):
        provisioner(sim, node).run(spec(sim, report_s=5))
    with pytest.raises(ProvisionError, match=r"step 'connect'.*needs --wifi-ssid"):
        provisioner(sim, node).run(spec(sim, wifi_ssid=""))
    assert registry_rows(sim.gateway) == []
    assert key_folders(sim.gateway) == []
    assert node_files(node) == (OLD_CONFIG, False)


def test_kids_are_unique_across_nodes(sim: SimRig, tmp_path: Path) -> None:
    kids = []
    for name in ("a", "b"):
        dut = sim.dut(f"node-{name}", kind="leak", speed=50)
        outcome = provisioner(sim, dut, reset=False).run(spec(sim, node_id=f"node-{name}"))
        kids.append(outcome.kid)
    assert kids == [b"\x01", b"\x02"]
