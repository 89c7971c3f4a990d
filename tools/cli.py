"""`city-node`: the technicians' tool for ESP32 nodes (USB serial, or the sim rig's socket://).

    city-node ports                                   list serial ports
    city-node flash --port PORT [--image MICROPYTHON.bin]   MicroPython (esptool), then the app
    city-node flash --port PORT --firmware firmware.bin     the tuned build, app frozen in
    city-node provision --port PORT --gateway-config gateway.toml --node-id ID --kind K ...
    city-node console --port PORT [--seconds N]       what the node prints
    city-node check --port PORT [--gateway-config gateway.toml]   read back the node's state
    city-node decode HEX [--gateway-config gateway.toml | --secret HEX --salt HEX]

Exit codes: 0 done, 1 the node or the gateway refused (the message says what to do), 2 usage.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2


def _port(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        required=True,
        help="the node's serial port, e.g. /dev/ttyUSB0, or socket://127.0.0.1:PORT (sim rig)",
    )
    parser.add_argument(
        "--wait", type=float, default=5.0, help="seconds to wait for the REPL (default 5)"
    )


def _gateway_config(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--gateway-config",
        type=Path,
        required=required,
        help="the gateway's TOML settings (its database and key folders are used directly: "
        "run as the gateway's service user)",
    )


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hex: {text!r}") from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="city-node", description=__doc__.split("\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("ports", help="list the serial ports")

    flash = commands.add_parser("flash", help="write MicroPython (optional) and the application")
    _port(flash)
    flash.add_argument("--image", type=Path, help="a MicroPython .bin for esptool (blank chip)")
    flash.add_argument("--chip", default="esp32", help="esptool --chip (default esp32)")
    flash.add_argument("--baud", type=int, default=460800, help="esptool baud rate")
    flash.add_argument("--app", type=Path, help="a built application folder (default: compile)")
    flash.add_argument(
        "--firmware",
        type=Path,
        help="a tuned firmware.bin with the application frozen in (firmware-build/README.md): "
        "written by esptool, nothing copied",
    )
    flash.add_argument("--force", action="store_true", help="copy even if already up to date")
    flash.add_argument("--no-reset", action="store_true", help="leave the node at its REPL")

    prov = commands.add_parser("provision", help="keys, config and gateway registration")
    _port(prov)
    _gateway_config(prov, required=True)
    prov.add_argument("--node-id", required=True)
    prov.add_argument("--kind", required=True, choices=("leak", "occupancy", "lighting", "binfill"))
    prov.add_argument("--link", required=True, choices=("coap", "lora"))
    prov.add_argument("--location", default="", help="where it is installed ('lat,lon' or text)")
    prov.add_argument("--notes", default="")
    prov.add_argument("--report-s", type=int, help="reading period (the kind's default if unset)")
    prov.add_argument("--status-s", type=int, help="status period (default 86400)")
    prov.add_argument("--kind-config", type=_json_object, default={}, help="JSON object")
    prov.add_argument("--wifi-ssid", default="")
    prov.add_argument("--wifi-password", default="")
    prov.add_argument("--gateway-host", default="", help="the gateway's address for CoAP nodes")
    prov.add_argument("--gateway-port", type=int, default=5683)
    prov.add_argument("--listen-port", type=int, help="a lamp's CoAP port for wake-ups")
    prov.add_argument("--lora", type=_json_object, default={}, help='e.g. {"sf": 10}')
    prov.add_argument("--extra", type=_json_object, default={}, help="more config.json keys")
    prov.add_argument(
        "--neighbours", default="", help="lamps to light ahead of a walker, e.g. lamp-2,lamp-3"
    )
    prov.add_argument("--replace", action="store_true", help="re-key a registered node")
    prov.add_argument("--no-reset", action="store_true", help="do not restart the node")

    console = commands.add_parser("console", help="print what the node prints")
    console.add_argument("--port", required=True)
    console.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")

    check = commands.add_parser("check", help="read back the node's state")
    _port(check)
    _gateway_config(check, required=False)

    decode = commands.add_parser("decode", help="a CoAP/OSCORE frame or CBOR payload, readable")
    decode.add_argument("hex", help="the bytes in hex (or a radio-medium JSON datagram)")
    _gateway_config(decode, required=False)
    decode.add_argument("--secret", type=_hex, help="the node's OSCORE master secret (hex)")
    decode.add_argument("--salt", type=_hex, default=b"", help="its master salt (hex)")
    decode.add_argument("--kid", type=_hex, help="its OSCORE sender id (default: from the frame)")
    decode.add_argument("--gateway-id", type=_hex, default=b"", help="the gateway's id (hex)")
    return top


# -- commands ---------------------------------------------------------------------------------
def cmd_ports(_args: argparse.Namespace) -> int:
    from tools.node import serial_ports  # noqa: PLC0415 - commands import what they use

    ports = serial_ports()
    print("\n".join(ports) if ports else "no serial ports")
    return 0


def cmd_flash(args: argparse.Namespace) -> int:
    from tools import flash, image  # noqa: PLC0415
    from tools.node import NodeConnection  # noqa: PLC0415

    if args.firmware is not None:
        return _flash_tuned(args)
    if args.image is not None:
        print(f"writing {args.image.name} with esptool (erases the chip)...")
        flash.write_micropython(args.port, args.image, args.chip, args.baud)
        time.sleep(1.0)  # the chip restarts into MicroPython
    app = image.load(args.app) if args.app else image.build()
    with NodeConnection.open(args.port, args.wait) as node:
        info = node.info
        assert info is not None
        print(f"{args.port}: MicroPython {info.version} on {info.platform}, id {info.unique_id}")

        def progress(rel: str, i: int, n: int) -> None:
            print(f"  [{i}/{n}] {rel}")

        result = flash.copy_application(node, app, args.force, progress)
        if result.copied == 0:
            print(f"application {app.version} already on the node (--force copies it again)")
        else:
            print(f"application {app.version}: {result.copied} files, {result.bytes} bytes")
        if args.no_reset:
            return 0
        node.reset()
        print("node reset: it starts the application now")
    return 0


def _flash_tuned(args: argparse.Namespace) -> int:
    from tools import flash  # noqa: PLC0415
    from tools.node import NodeConnection  # noqa: PLC0415

    if args.image is not None or args.app is not None:
        print(
            "city-node: --firmware has the application frozen in: leave out --image and --app",
            file=sys.stderr,
        )
        return EXIT_USAGE
    print(f"writing {args.firmware.name} with esptool (erases the chip)...")
    flash.write_micropython(args.port, args.firmware, args.chip, args.baud)
    time.sleep(1.0)  # the chip restarts into the firmware, which starts the application
    with NodeConnection.open(args.port, args.wait) as node:
        version = flash.frozen_application(node)
        print(f"{args.port}: tuned firmware, application {version} frozen in (nothing to copy)")
        if args.no_reset:
            return 0
        node.reset()
        print("node reset: it starts the application now")
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load  # noqa: PLC0415
    from tools.provision import GatewaySide, NodeSpec, Provisioner  # noqa: PLC0415

    try:
        config = load(args.gateway_config)
    except ConfigError as exc:
        print(f"city-node: gateway config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    spec = NodeSpec(
        node_id=args.node_id,
        kind=args.kind,
        link=args.link,
        location=args.location,
        notes=args.notes,
        report_s=args.report_s,
        status_s=args.status_s,
        kind_config=args.kind_config,
        wifi_ssid=args.wifi_ssid,
        wifi_password=args.wifi_password,
        gateway_host=args.gateway_host,
        gateway_port=args.gateway_port,
        listen_port=args.listen_port,
        lora=args.lora,
        extra=args.extra,
        neighbours=tuple(n.strip() for n in args.neighbours.split(",") if n.strip()),
    )
    provisioner = Provisioner(
        args.port,
        GatewaySide(config),
        wait_s=args.wait,
        replace=args.replace,
        reset=not args.no_reset,
    )
    outcome = provisioner.run(spec)
    print(outcome.label())
    print(f"{spec.node_id} {'re-keyed' if outcome.replaced else 'provisioned'} and registered")
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    import serial  # noqa: PLC0415

    from tools.node import PortBusy, PortMissing, _check_device  # noqa: PLC0415

    if not args.port.startswith("socket://"):
        _check_device(args.port)
    try:
        port = serial.serial_for_url(args.port, 115200, timeout=0.2, exclusive=True)
    except serial.SerialException as exc:
        raise PortMissing(f"cannot open {args.port}: {exc}") from None
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    out = sys.stdout.buffer
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                data = port.read(4096)
            except serial.SerialException as exc:
                raise PortBusy(f"{args.port}: the connection closed ({exc})") from None
            if data:
                out.write(data.replace(b"\r\n", b"\n"))
                out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        port.close()
    return 0


STATE_CODE = """\
import sys, os
if sys.platform == 'esp32':
    import machine
    _raw = machine.RTC().memory()
else:
    try:
        with open(os.getenv('SIM_STATE') + '/rtc.bin', 'rb') as _f:
            _raw = _f.read()
    except (OSError, TypeError):
        _raw = b''
try:
    from firmware.node import rtcstate
    class _RTC:
        def rtc_read(self):
            return _raw
    _st = rtcstate.load(_RTC())
except ImportError:
    _st = None
try:
    _fs = os.statvfs('/' if sys.platform == 'esp32' else '.')
    _free = _fs[0] * _fs[3]
except OSError:
    _free = None
import gc
gc.collect()
print(repr((_st, _free, gc.mem_free())))
"""


def node_state(node: Any) -> tuple[dict[str, Any] | None, int | None, int]:
    text = node.exec(STATE_CODE).strip().splitlines()[-1]
    state, flash_free, heap_free = ast.literal_eval(text)
    return state, flash_free, heap_free


def cmd_check(args: argparse.Namespace) -> int:
    from tools import image  # noqa: PLC0415
    from tools.flash import installed_manifest  # noqa: PLC0415
    from tools.node import NodeConnection  # noqa: PLC0415
    from tools.provision import CONFIG, firmware_errors  # noqa: PLC0415

    problems = []
    with NodeConnection.open(args.port, args.wait) as node:
        info = node.info
        assert info is not None
        board = "sim board" if info.sim else info.machine
        print(f"board        MicroPython {info.version} on {info.platform} ({board})")
        print(f"device id    {info.unique_id}")
        manifest = installed_manifest(node)
        if manifest is None:
            print("application  none (run `city-node flash`)")
            problems.append("no application")
        else:
            line = f"application  {manifest.get('version')}"
            try:
                built = image.build()
                line += " (current)" if manifest.get("files") == built.files else " (outdated)"
            except image.ImageError:
                pass
            print(line)
        raw = node.read_file(CONFIG)
        cfg: dict[str, Any] | None = None
        if raw is None:
            print("config       none (run `city-node provision`)")
            problems.append("no config")
        else:
            try:
                cfg = json.loads(raw)
            except ValueError:
                print("config       not JSON: the node runs on safe defaults")
                problems.append("config not JSON")
        if cfg is not None:
            where = cfg.get("coap", {}) if cfg.get("link", "coap") == "coap" else cfg.get("lora")
            print(
                f"config       {cfg.get('node_id')}: {cfg.get('kind')} over {cfg.get('link')} "
                f"{json.dumps(where)}"
            )
            print(f"location     {cfg.get('location') or '-'}")
            kind_config = cfg.get("kind_config") or {}
            print(
                f"periods      report {kind_config.get('report_s', 'default')} s, "
                f"status {cfg.get('status_s', 'default')} s"
            )
            try:
                errors = firmware_errors(cfg) if cfg.get("kind") in image_kinds() else ["kind"]
            except ImportError:
                errors = []  # no firmware sources beside the tool: the node validates it
            for error in errors:
                print(f"config error {error}")
                problems.append(f"config: {error}")
            oscore = cfg.get("oscore") or {}
            print(f"oscore kid   {oscore.get('sender_id', 'none')}")
        state, flash_free, heap_free = node_state(node)
        if state is None:
            print("state        (no firmware to read RTC memory with)")
        elif not state:
            print("state        nothing kept in RTC memory (first boot after power-on)")
        else:
            tries = state.get("tries", 0)
            limit = (cfg or {}).get("boot_tries", 3)
            print(
                f"state        {state.get('boots', 0)} boots since power-on, "
                f"{tries} failed in a row{' (SAFE MODE)' if tries > limit else ''}"
            )
            print(f"last error   {state.get('err') or '-'}")
            if tries > limit:
                problems.append("safe mode")
        print(f"free         flash {flash_free} bytes, heap {heap_free} bytes")
        if args.gateway_config is not None:
            problems += _check_gateway(args.gateway_config, cfg)
    if problems:
        print("problems     " + "; ".join(problems))
        return EXIT_FAILED
    print("ok")
    return 0


def image_kinds() -> tuple[str, ...]:
    from tools.provision import KINDS  # noqa: PLC0415

    return KINDS


def _check_gateway(path: Path, cfg: dict[str, Any] | None) -> list[str]:
    from gateway.config import load  # noqa: PLC0415
    from tools.provision import registry_view  # noqa: PLC0415

    if cfg is None or not cfg.get("node_id"):
        return []
    node_id = str(cfg["node_id"])
    view = registry_view(load(path), node_id)
    if view is None:
        print(f"gateway      {node_id} is NOT registered")
        return ["not registered at the gateway"]
    seen = view.get("last_seen")
    ago = f"last seen {time.time() - seen:.0f} s ago" if seen else "never heard from"
    print(f"gateway      registered ({view['kind']}, {view['link']}, kid {view['kid']}), {ago}")
    node_kid = (cfg.get("oscore") or {}).get("sender_id")
    if view["kid"] != node_kid:
        print(f"key mismatch the node uses kid {node_kid}, the gateway expects {view['kid']}")
        return ["key mismatch: provision again with --replace"]
    return []


def cmd_decode(args: argparse.Namespace) -> int:
    from tools.decode import Keys, describe, parse_hex  # noqa: PLC0415

    data = parse_hex(args.hex)
    keys = None
    keys_dir = None
    if args.secret is not None:
        kid = args.kid
        if kid is None:
            kid = _kid_in(data)
        keys = Keys(args.secret, args.salt, kid or b"", args.gateway_id)
    elif args.gateway_config is not None:
        from gateway.config import load  # noqa: PLC0415

        keys_dir = load(args.gateway_config).security.keys_dir
    for line in describe(data, keys, keys_dir):
        print(line)
    return 0


def _kid_in(data: bytes) -> bytes | None:
    from protocol import coap, oscore  # noqa: PLC0415

    try:
        value = coap.decode(data).option(coap.OSCORE)
        return oscore.decode_option(value)[2] if value is not None else None
    except ValueError:
        return None


COMMANDS = {
    "ports": cmd_ports,
    "flash": cmd_flash,
    "provision": cmd_provision,
    "console": cmd_console,
    "check": cmd_check,
    "decode": cmd_decode,
}


def main(argv: Sequence[str] | None = None) -> int:
    from tools.decode import DecodeError  # noqa: PLC0415
    from tools.image import ImageError  # noqa: PLC0415
    from tools.node import NodeError  # noqa: PLC0415

    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (NodeError, ImageError) as exc:
        print(f"city-node: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except DecodeError as exc:
        print(f"city-node: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
