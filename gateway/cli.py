"""`city-gateway`: run the daemon, check a config, manage the node registry.

    city-gateway --config gateway.toml                 run (also: `python -m gateway`)
    city-gateway --config gateway.toml check-config    validate and print the settings
    city-gateway --config gateway.toml node add ID --kind leak --link coap [...]
    city-gateway --config gateway.toml node list [--json]
    city-gateway --config gateway.toml node update ID --location "..."
    city-gateway --config gateway.toml node remove ID
    city-gateway --config gateway.toml account add NAME --role operator   (web page accounts)

Node commands write the gateway database directly, so run them as the service user (the
database is readable and writable by that user only); a running daemon picks the change up
within a second. Exit codes: 0 done, 1 refused (e.g. node exists), 2 bad config or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway import accounts, registry
from gateway import config as config_module
from gateway.config import ConfigError, GatewayConfig, LoggingConfig
from gateway.store.db import apply_schema, connect

EXIT_REFUSED = 1
EXIT_CONFIG = 2


class JSONFormatter(logging.Formatter):
    """One JSON object per line (journald keeps lines; log shippers parse them)."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(settings: LoggingConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="city-gateway", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", type=Path, help="TOML settings (default: the embedded defaults)"
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the gateway daemon (the default)")
    check = commands.add_parser("check-config", help="validate the config and print it")
    check.add_argument("--quiet", action="store_true", help="print nothing when it is valid")

    node = commands.add_parser("node", help="manage the node registry").add_subparsers(
        dest="node_command", required=True
    )
    add = node.add_parser("add", help="register a node")
    add.add_argument("node_id")
    add.add_argument("--kind", required=True, help="leak, occupancy, lighting, binfill...")
    add.add_argument("--link", required=True, choices=registry.LINKS)
    _node_fields(add)
    update = node.add_parser("update", help="change a node's fields")
    update.add_argument("node_id")
    update.add_argument("--kind")
    update.add_argument("--link", choices=registry.LINKS)
    _node_fields(update)
    listing = node.add_parser("list", help="list registered nodes")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    remove = node.add_parser("remove", help="unregister a node")
    remove.add_argument("node_id")
    accounts.add_parser(commands)
    return parser


def _node_fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--location", help="where it is installed (free text or 'lat,lon')")
    parser.add_argument("--notes")
    parser.add_argument("--node-config", help="the node's configuration, a JSON object")
    parser.add_argument("--key-ref", help="name of the node's OSCORE context")


def _node_changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for field in ("kind", "link", "location", "notes", "key_ref"):
        value = getattr(args, field, None)
        if value is not None:
            changes[field] = value
    if args.node_config is not None:
        try:
            node_config = json.loads(args.node_config)
        except json.JSONDecodeError as exc:
            raise registry.RegistryError(f"--node-config is not JSON: {exc}") from None
        if not isinstance(node_config, dict):
            raise registry.RegistryError("--node-config must be a JSON object")
        changes["config"] = node_config
    return changes


def _node_command(config: GatewayConfig, args: argparse.Namespace) -> int:
    os.umask(0o077)  # a database created here must be the service user's alone
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = connect(config.database_path)
    try:
        apply_schema(conn, [registry.SCHEMA])
        command = args.node_command
        if command == "list":
            for n in registry.list_nodes(conn):
                if args.json:
                    print(json.dumps({**_plain(n), "config": dict(n.config)}, sort_keys=True))
                else:
                    print(f"{n.node_id}\t{n.kind}\t{n.link}\t{n.location}\t{n.key_ref or '-'}")
            return 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            if command == "add":
                changes = _node_changes(args)
                node = registry.Node(node_id=args.node_id, kind=args.kind, link=args.link)
                extra = {k: v for k, v in changes.items() if k not in ("kind", "link")}
                registry.add_node(conn, registry.Node(**{**_plain(node), **extra}))
                message = f"added {args.node_id}"
            elif command == "update":
                registry.update_node(conn, args.node_id, _node_changes(args))
                message = f"updated {args.node_id}"
            else:
                registry.remove_node(conn, args.node_id)
                message = f"removed {args.node_id}"
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        print(message)
        return 0
    except registry.RegistryError as exc:
        print(f"city-gateway: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        conn.close()


def _plain(node: registry.Node) -> dict[str, Any]:
    return {name: getattr(node, name) for name in registry.Node.__dataclass_fields__}


def _run(config: GatewayConfig) -> int:
    # Imported here so that `node` and `check-config` start fast on a Raspberry Pi.
    from gateway.agent import Agent, StartupError  # noqa: PLC0415

    setup_logging(config.logging)
    os.umask(0o077)
    try:
        agent = Agent(config)
    except StartupError as exc:
        print(f"city-gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    asyncio.run(agent.run())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = config_module.load(args.config)
    except ConfigError as exc:
        print(f"city-gateway: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        if not args.quiet:
            origin = str(config.source) if config.source else "embedded defaults"
            print(f"config OK ({origin}) at {time.strftime('%Y-%m-%d %H:%M:%S')}")
            print(json.dumps(config_module.summary(config), indent=2))
        return 0
    if args.command == "node":
        return _node_command(config, args)
    if args.command == "account":
        return accounts.command(config, args)
    return _run(config)


if __name__ == "__main__":
    sys.exit(main())
