"""A connection to a node's MicroPython REPL over USB serial (or the sim rig's socket://), on
mpremote's own transport, with the errors a technician can act on.

    with NodeConnection.open("/dev/ttyUSB0") as node:
        info = node.identify()
        node.write_file("config.json", data)

What can go wrong, and what the technician reads:
- PortMissing: the device path does not exist (not plugged in, wrong name), or nothing listens
  at the socket:// address. The message lists the serial ports that do exist.
- PortBusy: another program (a console, mpremote, the gateway's tooling) holds the port.
- NoAnswer: the port opens but nothing answers: a node in deep sleep, or not powered.
- WrongBoard: something answers but not a MicroPython REPL, or a MicroPython that is not an
  ESP32 (nor the sim rig's board).
- CopyFailed: a file could not be written, or did not read back the same.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import errno
import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import serial
import serial.tools.list_ports
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

READ_TIMEOUT_S = 10.0
# What a node prints when it starts again: the ESP32's ROM, the sim rig's supervisor
RESTART_BANNERS = (b"rst:0x", b"ets Jun  8 2016", b"\r\nsim: ")
OVERALL_MARGIN_S = 10.0  # an exchange may take its timeout plus this, however chatty the node
PROMPTS = (b">>> ", b"raw REPL; CTRL-B to exit\r\n>")
CHUNK = 1024  # bytes per hash step on the node
READ_CHUNK = 8192  # bytes per read round trip
READ_CODE = """\
import binascii
with open({path!r}, 'rb') as _f:
    _f.seek({offset})
    print(binascii.b2a_base64(_f.read({n})).decode().strip())
"""
WRITE_CHUNK = 4096  # bytes per write round trip: 5.5 KB of base64 source, easy for an ESP32
WRITE_CODE = """\
import binascii
with open({path!r}, {mode!r}) as _f:
    _f.write(binascii.a2b_base64({chunk!r}))
"""
HASH_CODE = """\
import hashlib
_h = hashlib.sha256()
with open({path!r}, 'rb') as _f:
    while True:
        _b = _f.read(1024)
        if not _b:
            break
        _h.update(_b)
print(binascii.hexlify(_h.digest()).decode())
"""


class NodeError(Exception):
    """A failure the technician can act on; the message says how."""


class PortMissing(NodeError):
    pass


class PortBusy(NodeError):
    pass


class NoAnswer(NodeError):
    pass


class WrongBoard(NodeError):
    pass


class CopyFailed(NodeError):
    pass


@dataclass(frozen=True)
class BoardInfo:
    platform: str  # sys.platform: "esp32", or "linux" on the sim rig
    machine: str  # sys.implementation._machine, e.g. "Generic ESP32 module with ESP32"
    version: str  # MicroPython version, e.g. "1.29.0"
    sim: bool  # the sim rig's virtual board
    unique_id: str  # hex: the ESP32's MAC (machine.unique_id), or the sim board's id


IDENTIFY = """\
import sys, os
_p = sys.platform
_sim = False
_uid = ''
if _p == 'esp32':
    import machine, binascii
    _uid = binascii.hexlify(machine.unique_id()).decode()
elif hasattr(os, 'getenv') and os.getenv('SIM_STATE'):
    _sim = True
    try:
        import json
        with open(os.getenv('SIM_STATE') + '/board.json') as _f:
            _uid = json.load(_f).get('unique_id') or ''
    except (OSError, ValueError):
        pass
    _uid = _uid or '5e0000000001'
_v = '.'.join(str(v) for v in sys.implementation.version[:3])
print(repr((_p, sys.implementation._machine, _v, _sim, _uid)))
"""

# A hard reset from the REPL. The sim board's hard reset is its interpreter ending with 101
# (firmware/boards/sim); the rig restarts it as a "hard" reset with RTC memory kept.
RESET = """\
import sys
if sys.platform == 'esp32':
    import machine
    machine.reset()
else:
    sys.exit(101)
"""


def serial_ports() -> list[str]:
    return sorted(p.device for p in serial.tools.list_ports.comports())


def _check_device(port: str) -> None:
    """Open a serial device once, exclusively, to tell a missing port from a busy one
    (mpremote reports both as "failed to access")."""
    if not os.path.exists(port):
        seen = ", ".join(serial_ports()) or "none"
        raise PortMissing(
            f"no serial port {port}: is the node plugged in (a data cable, not a charge-only "
            f"one)? Serial ports present: {seen}"
        )
    try:
        probe = serial.Serial(port, 115200, exclusive=True, timeout=0)
    except serial.SerialException as exc:
        text = str(exc)
        if "exclusively lock" in text or getattr(exc, "errno", None) == errno.EBUSY:
            raise PortBusy(
                f"{port} is busy: another program holds it (a console, mpremote, screen); "
                "close it and try again"
            ) from None
        if getattr(exc, "errno", None) == errno.EACCES or "Permission denied" in text:
            raise PortMissing(
                f"no permission to open {port}: add yourself to the 'dialout' group "
                "(sudo usermod -aG dialout $USER) and log in again"
            ) from None
        raise PortMissing(f"cannot open {port}: {text}") from None
    probe.close()


class NodeConnection:
    """The raw REPL of one node, entered without a soft reset (mpremote's `resume`)."""

    def __init__(self, transport: SerialTransport, port: str) -> None:
        self.transport = transport
        self.port = port
        self.info: BoardInfo | None = None
        self._aborted = False
        self._exchanging = False

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, port: str, wait_s: float = 5.0, check_board: bool = True) -> NodeConnection:
        """Connect, interrupt whatever runs (Ctrl-C) until a REPL answers, enter the raw REPL,
        and check the board is an ESP32 (or the sim board)."""
        if not port.startswith(("socket://", "rfc2217://", "loop://")):
            _check_device(port)
        try:
            transport = SerialTransport(port, baudrate=115200)
        except TransportError as exc:
            if port.startswith("socket://"):
                raise PortMissing(
                    f"nothing listens at {port}: is the sim rig's board running? ({exc})"
                ) from None
            raise PortBusy(f"{port}: {exc} (it may be in use by another program)") from None
        # a node that dies mid-answer must not hang a read forever (mpremote opens blocking)
        transport.serial.timeout = READ_TIMEOUT_S
        node = cls(transport, port)
        node._watch_restarts()
        try:
            node._interrupt(wait_s)
            transport.enter_raw_repl(soft_reset=False)
            if check_board:
                node.identify()
        except BaseException:
            node._close_quietly()
            raise
        return node

    def _read_available(self) -> bytes:
        port = self.transport.serial
        timeout = port.timeout
        try:
            # in_waiting of a socket:// port says 1 for "some": read what is there at once
            if not port.in_waiting:
                return b""
            port.timeout = 0
            return bytes(port.read(4096))
        except (serial.SerialException, OSError) as exc:
            raise PortBusy(
                f"{self.port} closed the connection at once: another program holds the port ({exc})"
            ) from None
        finally:
            port.timeout = timeout

    def _interrupt(self, wait_s: float) -> None:
        """Ctrl-C until a prompt shows: main.py may be running, or the node just woke up."""
        seen = b""
        deadline = time.monotonic() + wait_s
        next_ctrl_c = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_ctrl_c:
                try:
                    self.transport.serial.write(b"\r\x03")
                except (serial.SerialException, OSError) as exc:
                    raise PortBusy(
                        f"{self.port} refused the connection: another program holds it ({exc})"
                    ) from None
                next_ctrl_c = now + 0.1
            seen = (seen + self._read_available())[-4096:]
            if any(p in seen for p in PROMPTS):
                # let the rest of the banner arrive, so the raw REPL starts clean
                time.sleep(0.05)
                self._read_available()
                return
            time.sleep(0.02)
        if not seen.strip():
            raise NoAnswer(
                f"no answer on {self.port} within {wait_s:g} s: the node may be in deep sleep "
                "or unpowered. Press its reset (EN) button, or use --reset, and try again"
            )
        shown = seen[-80:].decode("utf-8", "replace").strip()
        raise WrongBoard(
            f"{self.port} answers, but not with a MicroPython REPL (last output: {shown!r}). "
            "Is MicroPython flashed? `city-node flash --image ESP32_GENERIC-....bin` writes it"
        )

    # -- running code ----------------------------------------------------------------------
    def exec(self, code: str, timeout: float = 10.0) -> str:
        """Run code in the raw REPL; its printed output. A device-side exception raises
        NodeError with the device's traceback."""
        # mpremote's waits restart on every byte: a node that rebooted and keeps printing
        # would hold them forever. Past the overall limit the port is closed under them.
        watchdog = threading.Timer(timeout + OVERALL_MARGIN_S, self._abort)
        watchdog.daemon = True
        watchdog.start()
        self._exchanging = True
        try:
            out, err = self.transport.exec_raw(code, timeout=timeout)
        except (TransportError, struct.error) as exc:
            # struct.error: the raw-paste handshake cut short (the node went away mid-way)
            raise NodeError(f"{self.port}: the node stopped answering ({exc})") from None
        except (serial.SerialException, OSError, ValueError, TypeError) as exc:
            # ValueError/TypeError: pyserial reading a port closed under it by the watchdog
            if self._aborted:
                raise NodeError(
                    f"{self.port}: no complete answer within {timeout + OVERALL_MARGIN_S:g} s "
                    "(the node restarted or hangs)"
                ) from None
            raise NodeError(f"{self.port}: connection lost ({exc})") from None
        finally:
            self._exchanging = False
            watchdog.cancel()
        if err:
            raise NodeError(err.decode("utf-8", "replace").strip().splitlines()[-1])
        return bytes(out).decode("utf-8", "replace")

    def _watch_restarts(self) -> None:
        """Spot a node restarting in the middle of an exchange (its boot banner in the reply)
        and fail that exchange at once rather than wait out the timeouts."""
        port = self.transport.serial
        read = port.read
        window = bytearray()

        def read_watching(size: int = 1) -> bytes:
            data = bytes(read(size))
            if self._exchanging and data:
                window.extend(data)
                del window[: max(0, len(window) - 64)]
                for banner in RESTART_BANNERS:
                    if banner in window:
                        window.clear()
                        raise serial.SerialException("the node restarted")
            return data

        port.read = read_watching

    def _abort(self) -> None:
        self._aborted = True
        self._close_quietly()

    def eval(self, expression: str) -> Any:
        return ast.literal_eval(self.exec(f"print(repr({expression}))").strip())

    def identify(self) -> BoardInfo:
        text = self.exec(IDENTIFY).strip()
        platform, machine, version, sim, uid = ast.literal_eval(text.splitlines()[-1])
        info = BoardInfo(platform, machine, version, sim, uid)
        if platform != "esp32" and not sim:
            raise WrongBoard(
                f"{self.port} is MicroPython {version} on {platform} ({machine}), not an "
                "ESP32: check the port (`city-node ports`) and the board"
            )
        self.info = info
        return info

    # -- files -------------------------------------------------------------------------------
    def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist (READ_CHUNK bytes a round trip)."""
        data = bytearray()
        while True:
            code = READ_CODE.format(path=path, offset=len(data), n=READ_CHUNK)
            try:
                out = self.exec(code, timeout=20).strip()
            except NodeError as exc:
                if "ENOENT" in str(exc) and not data:
                    return None
                raise NodeError(f"reading {path} on the node: {exc}") from None
            chunk = base64.b64decode(out) if out else b""
            data += chunk
            if len(chunk) < READ_CHUNK:
                return bytes(data)

    def sha256(self, path: str) -> bytes | None:
        try:
            return bytes(self.transport.fs_hashfile(path, "sha256", chunk_size=CHUNK))
        except OSError:
            return None
        except TransportError as exc:
            raise NodeError(f"hashing {path} on the node: {_last_line(exc)}") from None

    def write_file(
        self, path: str, data: bytes, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Write a file and check it reads back the same (SHA-256 computed on the node): a
        CopyFailed names the file and the cause. Base64 chunks of WRITE_CHUNK bytes, one raw-
        REPL round trip each, so a node's heap compiles them easily; the hash comes back with
        the last chunk."""
        total = len(data)
        try:
            for start in range(0, max(total, 1), WRITE_CHUNK):
                chunk = base64.b64encode(data[start : start + WRITE_CHUNK]).decode()
                mode = "wb" if start == 0 else "ab"
                last = start + WRITE_CHUNK >= total
                code = WRITE_CODE.format(path=path, mode=mode, chunk=chunk)
                if last:
                    code += HASH_CODE.format(path=path)
                out = self.exec(code, timeout=20)
                if progress is not None:
                    progress(min(start + WRITE_CHUNK, total), total)
        except NodeError as exc:
            raise CopyFailed(f"copying {path} to the node failed: {_reason(str(exc))}") from None
        if out.strip() != hashlib.sha256(data).hexdigest():
            raise CopyFailed(f"{path} on the node does not read back as written")

    def makedirs(self, path: str) -> None:
        parts = [p for p in path.strip("/").split("/") if p]
        for i in range(1, len(parts) + 1):
            folder = "/".join(parts[:i])
            self.exec(MKDIR.format(folder=folder))

    def remove_tree(self, path: str) -> None:
        """Remove a file or folder with everything in it (no error when absent)."""
        self.exec(REMOVE_TREE + f"_rm({path!r})\n")

    def rename(self, src: str, dest: str) -> None:
        self.exec(f"import os\nos.rename({src!r}, {dest!r})")

    def exists(self, path: str) -> bool:
        return bool(self.transport.fs_exists(path))

    def listdir(self, path: str = "") -> list[str]:
        return [entry.name for entry in self.transport.fs_listdir(path)]

    # -- reset and close ---------------------------------------------------------------------
    def reset(self) -> None:
        """Hard-reset the node (the next start runs boot.py and main.py) and disconnect."""
        # the reset may cut the answer short
        with contextlib.suppress(TransportError, serial.SerialException, OSError):
            self.transport.exec_raw_no_follow(RESET)
        self.transport.in_raw_repl = False
        self._close_quietly()

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            if self.transport.in_raw_repl:
                self.transport.exit_raw_repl()
        self._close_quietly()

    def _close_quietly(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self.transport.close()

    def __enter__(self) -> NodeConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# errno 17 is EEXIST (MicroPython's errno numbers are Linux's)
MKDIR = """\
import os
try:
    os.mkdir({folder!r})
except OSError as e:
    if e.errno != 17:
        raise
"""

REMOVE_TREE = """\
import os
def _rm(p):
    try:
        mode = os.stat(p)[0]
    except OSError:
        return
    if mode & 0x4000:
        for e in os.ilistdir(p):
            _rm(p + '/' + e[0])
        os.rmdir(p)
    else:
        os.remove(p)
"""


def _last_line(exc: TransportError) -> str:
    if isinstance(exc, TransportExecError):
        lines = str(exc.error_output).strip().splitlines()
        return lines[-1] if lines else "error"
    return str(exc)


def _reason(text: str) -> str:
    """A device-side OSError line in words."""
    if "ENOSPC" in text or "28" in text.split()[-1:]:
        return "the node's flash is full"
    return text


def _os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the node's flash is full"
    if exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, exc.errno)} ({os.strerror(exc.errno)})"
    return str(exc)


def local_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())
