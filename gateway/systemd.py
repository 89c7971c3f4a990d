"""systemd notification (sd_notify) over its unix datagram socket, without a dependency.

`Type=notify` units get `NOTIFY_SOCKET`; `WatchdogSec=` adds `WATCHDOG_USEC` (and
`WATCHDOG_PID`, the process that must send). Outside systemd every call is a no-op.

A notification is advice to the service manager, never a step the gateway depends on: a socket
that vanished (systemd restarted, a test harness gone) or refuses must not abort anything,
least of all the shutdown that flushes the store. So `notify` never raises; the first failure
for a socket is logged as a warning, later ones at debug level (the watchdog pings every few
seconds and would flood the log).
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

_failed: set[str] = set()  # sockets whose failure was logged as a warning already


def notify(message: str) -> bool:
    """Send e.g. "READY=1" or "WATCHDOG=1"; False when not run by systemd or not delivered."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(message.encode())
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL byte in it
        first = address not in _failed
        _failed.add(address)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "systemd notification %r not delivered to %s: %s",
            message.split("\n", 1)[0],
            address,
            exc,
        )
        return False
    _failed.discard(address)  # delivered: a later outage is worth a warning again
    return True


def watchdog_interval() -> float | None:
    """How often to send WATCHDOG=1 (half the timeout), or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1e6 / 2
