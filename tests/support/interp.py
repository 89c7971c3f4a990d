"""Run one test body on CPython or on the MicroPython unix port.

`Interp.module("protocol.cbor")` returns the module itself on CPython, and on MicroPython a
proxy whose attribute reads and calls travel to a `micropython` process running
`mpy_bridge.py`. Exceptions raised there come back as local exception classes of the same
name (subclasses of ValueError when the remote one is), so `pytest.raises(mod.SomeError)`
and `pytest.raises(ValueError)` read the same under both interpreters.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = Path(__file__).with_name("mpy_bridge.py")


def micropython_binary() -> str | None:
    """The `micropython` command from the virtual env, else from PATH."""
    local = Path(sys.executable).with_name("micropython")
    return str(local) if local.exists() else shutil.which("micropython")


class CPython:
    name = "cpython"

    def module(self, name: str) -> Any:
        return importlib.import_module(name)

    def close(self) -> None:
        pass


_remote_errors: dict[tuple[str, tuple[str, ...]], type[Exception]] = {}


def remote_error(name: str, families: list[str]) -> type[Exception]:
    """A local stand-in for a MicroPython exception class, in the same built-in families."""
    key = (name, tuple(families))
    if key not in _remote_errors:
        builtin = __import__("builtins")
        bases = tuple(getattr(builtin, f) for f in families) or (RuntimeError,)
        _remote_errors[key] = type(name, bases, {"__module__": "micropython"})
    return _remote_errors[key]


class BridgeDied(RuntimeError):
    pass


class MicroPython:
    """A `micropython` process serving the bridge; one per test module."""

    name = "micropython"

    def __init__(self, heapsize: str | None = None) -> None:
        binary = micropython_binary()
        if binary is None:
            raise BridgeDied("no micropython binary")
        cmd = [binary]
        if heapsize:
            cmd += ["-X", f"heapsize={heapsize}"]
        env = dict(os.environ, MICROPYPATH=f"{ROOT}:.frozen")
        self.proc = subprocess.Popen(
            [*cmd, str(BRIDGE)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self._free: list[int] = []
        self._lock = threading.Lock()

    # -- wire ---------------------------------------------------------------------------
    def request(self, **req: Any) -> Any:
        with self._lock:
            if self._free:
                req["free"], self._free = self._free, []
            assert self.proc.stdin and self.proc.stdout
            try:
                # ensure_ascii=False: MicroPython's json decodes escaped surrogate pairs wrongly, so
                # characters above U+FFFF travel as raw UTF-8.
                self.proc.stdin.write(json.dumps(req, ensure_ascii=False) + "\n")
                self.proc.stdin.flush()
            except BrokenPipeError as e:
                raise BridgeDied(f"micropython exited with {self.proc.poll()}") from e
            line = self.proc.stdout.readline()
        if not line:
            raise BridgeDied(f"micropython exited with {self.proc.wait()}")
        reply = json.loads(line)
        if "err" in reply:
            raise remote_error(reply["err"], reply["families"])(reply["msg"])
        return self.decode(reply["ok"])

    def encode(self, v: Any) -> Any:
        if isinstance(v, Remote):
            return {"$h": v._hid}
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            return {"$f": struct.pack(">d", v).hex()}
        if isinstance(v, (bytes, bytearray, memoryview)):
            return {"$b": bytes(v).hex()}
        if isinstance(v, list):
            return [self.encode(x) for x in v]
        if isinstance(v, tuple):
            return {"$t": [self.encode(x) for x in v]}
        if isinstance(v, dict):
            return {"$d": [[self.encode(k), self.encode(x)] for k, x in v.items()]}
        if hasattr(v, "tag") and type(v).__name__ == "Tag":
            return {"$tag": v.tag, "v": self.encode(v.value)}
        raise TypeError(f"cannot send {type(v).__name__} to micropython")

    def decode(self, v: Any) -> Any:
        if isinstance(v, list):
            return [self.decode(x) for x in v]
        if not isinstance(v, dict):
            return v
        if "$f" in v:
            return struct.unpack(">d", bytes.fromhex(v["$f"]))[0]
        if "$b" in v:
            return bytes.fromhex(v["$b"])
        if "$t" in v:
            return tuple(self.decode(x) for x in v["$t"])
        if "$d" in v:
            return {_hashable(self.decode(k)): self.decode(x) for k, x in v["$d"]}
        if "$tag" in v:
            from protocol.cbor import Tag

            return Tag(v["$tag"], self.decode(v["v"]))
        if v.get("exc"):
            return remote_error(v["class"], v["families"])
        return Remote(self, v["$h"], v.get("class") or v.get("type", "?"))

    # -- API ------------------------------------------------------------------------------
    def module(self, name: str) -> Any:
        return self.request(op="import", name=name)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


class Remote:
    """An object living in the micropython process."""

    def __init__(self, mp: MicroPython, hid: int, kind: str) -> None:
        object.__setattr__(self, "_mp", mp)
        object.__setattr__(self, "_hid", hid)
        object.__setattr__(self, "_kind", kind)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._mp.request(op="getattr", h=self._hid, name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._mp.request(op="setattr", h=self._hid, name=name, value=self._mp.encode(value))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        mp = self._mp
        return mp.request(
            op="call",
            h=self._hid,
            args=[mp.encode(a) for a in args],
            kwargs={k: mp.encode(x) for k, x in kwargs.items()},
        )

    def __del__(self) -> None:
        # At interpreter shutdown the bridge may be gone already; nothing to free then.
        with contextlib.suppress(AttributeError):
            self._mp._free.append(self._hid)

    def __repr__(self) -> str:
        return f"<micropython {self._kind} #{self._hid}>"
