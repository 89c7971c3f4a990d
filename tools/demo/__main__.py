"""`make demo`: a simulated city block on this machine.

    python -m tools.demo [--nodes 24] [--duration 300] [--http-port 8080] [--exit-after-story]

Starts the gateway with its web page, the simulated LoRa radio medium and a city block of
virtual nodes (the real firmware on the MicroPython unix port), plays the story of
tools/demo/scenario.py on a clock that makes a day pass in minutes, narrates it, and stops
everything cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from tools.demo.city_block import MAX_NODES, MIN_NODES
from tools.demo.runner import Demo, Options


def parse(argv: list[str] | None = None) -> Options:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=defaults.nodes,
        help=f"nodes in the block, {MIN_NODES}-{MAX_NODES} (default {defaults.nodes})",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=defaults.duration_s,
        help="real seconds the 35-hour story takes (default %(default)s); the clock waits"
        " for the nodes when the machine cannot keep up",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=defaults.http_port,
        help="the web page's port on 127.0.0.1 (default %(default)s; a free one if taken)",
    )
    parser.add_argument(
        "--exit-after-story",
        action="store_true",
        help="stop once the story is told (default: keep the block running until Ctrl-C)",
    )
    parser.add_argument(
        "--run-root",
        type=Path,
        default=defaults.run_root,
        help="where run folders go (default var/demo/; the last 3 are kept)",
    )
    parser.add_argument(
        "--max-running",
        type=int,
        default=defaults.max_running,
        help="battery node processes awake at once (default %(default)s)",
    )
    parser.add_argument(
        "--mqtt",
        default=f"{defaults.mqtt_host}:{defaults.mqtt_port}",
        metavar="HOST:PORT",
        help="the MQTT broker to forward to when one answers there (default %(default)s);"
        " without one, readings go to the gateway's local spool",
    )
    parser.add_argument(
        "--lora-lamps",
        action="store_true",
        help="put every other lamp on LoRa (class-C pushes; see tools/demo/city_block.py for"
        " why lamps are on WiFi by default)",
    )
    parser.add_argument(
        "--gateway-log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default=defaults.gateway_log_level,
        help="the gateway's log level (logs/gateway.log in the run folder)",
    )
    args = parser.parse_args(argv)
    if not MIN_NODES <= args.nodes <= MAX_NODES:
        parser.error(f"--nodes must be between {MIN_NODES} and {MAX_NODES}")
    if args.duration <= 0 or args.max_running < 1:
        parser.error("--duration and --max-running must be positive")
    host, _, port = args.mqtt.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        parser.error("--mqtt must be HOST:PORT")
    return Options(
        nodes=args.nodes,
        duration_s=args.duration,
        http_port=args.http_port,
        run_root=args.run_root.resolve(),
        exit_after_story=args.exit_after_story,
        max_running=args.max_running,
        gateway_log_level=args.gateway_log_level,
        mqtt_host=host,
        mqtt_port=int(port),
        lora_lamps=args.lora_lamps,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    return asyncio.run(Demo(options).run())


if __name__ == "__main__":
    sys.exit(main())
