"""The database's writer process: commits groups of batch writes away from the event loop's GIL.

Why a process: a writer *thread* shares the interpreter lock with the event loop. It needs the
lock to start a group, after every SQLite call and to hand the results back, and under load
the loop holds it nearly all the time; each hand-over then costs the loop a wake-up, a
context switch and cold caches. Measured with bench/ingest.py, a writer thread that did no
SQL at all (it only slept for the length of a commit) already cost the loop about a tenth of
its throughput. To this process the loop pays per group, not per statement: pickling the
items, one pipe write (which wakes the child: it runs as SCHED_BATCH so that it does not
preempt the loop for it) and one reply, about 50 us per uplink at the bench's load. The
uplink path (a `Batch` marked `writer_process = True`) is the hot one, so it comes here; the
rare other writes stay on the writer thread, and SQLite (WAL, `busy_timeout`) orders the two
writers' transactions: one may wait for the other's commit.

Protocol on the child's stdin/stdout: frames of a 4-byte big-endian length and a pickle.
  parent -> child: first the connection settings (a dict), then `(group_id, runs, checks)`
                   where runs is a list of `(batch, items)` in submission order and checks
                   the database's commit hooks' `check`s (gateway/store/groups.py CommitHook),
                   or None when they are the ones sent last (they rarely change)
  child -> parent: `("ready", pid)` once connected, then per group
                   `(group_id, outcomes, check_results, seconds)` after its COMMIT, or
                   `(group_id, exception, None, seconds)` if the transaction failed as a whole
Durability is the same as on the thread: the child connects with `synchronous=FULL`, so
COMMIT has fsynced the WAL before the reply is written, and a caller learns of its write only
from that reply. The child ignores SIGINT and SIGTERM (a service stop signals the whole
group) and stops when its stdin closes: at the parent's `close()`, or when the parent dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

Reply = tuple[int, Any, list[Any] | None, float]


def _frame(obj: object) -> bytes:
    try:
        body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise TypeError(f"cannot hand {type(obj).__name__} to the writer process: {exc}") from exc
    return _LENGTH.pack(len(body)) + body


class WriterProcess:
    """The parent's side: start the child, send groups, get each reply through `on_reply`.

    Replies are parsed as they arrive, in the pipe's protocol callback, and handed on at
    once: no task wakes up for them (the event loop pays per group, and under load it is
    the loop's time that is short)."""

    def __init__(
        self,
        transport: asyncio.SubprocessTransport,
        protocol: _ChildPipes,
        on_reply: Callable[[Reply], None],
        on_exit: Callable[[int | None], None],
    ) -> None:
        self.transport = transport
        self.pid: int = transport.get_pid()
        self._protocol = protocol
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        self._stdin = stdin
        self._checks: list[Any] = []  # as the child has them
        protocol.on_frame = on_reply
        protocol.on_exit = on_exit

    @classmethod
    async def start(
        cls,
        settings: dict[str, Any],
        on_reply: Callable[[Reply], None],
        on_exit: Callable[[int | None], None],
    ) -> WriterProcess:
        root = str(Path(__file__).resolve().parents[2])  # where `gateway` imports from
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        )
        loop = asyncio.get_running_loop()
        protocol = _ChildPipes(loop)
        transport, _ = await loop.subprocess_exec(
            lambda: protocol,
            sys.executable,
            "-c",  # not `-m`: gateway.store imports this module before runpy would run it
            "from gateway.store.writer import child_main; child_main()",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            env=env,
        )
        try:
            stdin = transport.get_pipe_transport(0)
            assert isinstance(stdin, asyncio.WriteTransport)
            stdin.write(_frame(settings))
            ready = await asyncio.wait_for(asyncio.shield(protocol.first), START_TIMEOUT_S)
            if not (isinstance(ready, tuple) and ready[:1] == ("ready",)):
                raise RuntimeError(f"writer process did not start: {ready!r}")
        except BaseException:
            transport.close()  # kills the child if it still runs
            await protocol.closed
            raise
        return cls(transport, protocol, on_reply, on_exit)

    def send(self, group_id: int, runs: list[tuple[Any, list[Any]]], checks: list[Any]) -> None:
        """Hand a group over (raises TypeError if something in it does not pickle)."""
        same = len(checks) == len(self._checks) and all(map(operator.is_, checks, self._checks))
        self._stdin.write(_frame((group_id, runs, None if same else checks)))
        self._checks = checks

    async def close(self) -> None:
        """Let the child finish and exit (it stops at the end of its stdin)."""
        self._stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._protocol.closed), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("the writer process did not stop in %.0f s: killed", STOP_TIMEOUT_S)
            self.transport.kill()
            await self._protocol.closed


class _ChildPipes(asyncio.SubprocessProtocol):
    """Frames from the child's stdout, each unpickled and passed to `on_frame`; `on_exit`
    once the child has exited and its pipes are closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transport: asyncio.SubprocessTransport | None = None
        self.first: asyncio.Future[Any] = loop.create_future()  # the "ready" frame, or None
        self.closed: asyncio.Future[None] = loop.create_future()
        self.on_frame: Callable[[Any], None] = self._set_first
        self.on_exit: Callable[[int | None], None] = lambda code: None
        self._buffer = bytearray()
        self._garbled = False

    def _set_first(self, frame: Any) -> None:
        if not self.first.done():
            self.first.set_result(frame)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        if fd != 1 or self._garbled:
            return
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer)
            end = _LENGTH.size + length
            if len(buffer) < end:
                return
            body = bytes(buffer[_LENGTH.size : end])
            del buffer[:end]
            try:
                self.on_frame(pickle.loads(body))
            except Exception:  # a garbled reply (or a bug handling it): the child's end
                log.exception("bad reply from the writer process")
                self._garbled = True
                if self.transport is not None:
                    self.transport.kill()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        # The child has exited and both pipes are closed: every reply has been read.
        assert self.transport is not None
        code = self.transport.get_returncode()
        self.transport.close()
        self._set_first(None)
        try:
            self.on_exit(code)
        finally:
            if not self.closed.done():
                self.closed.set_result(None)


# -- the child ---------------------------------------------------------------------------------


def _read_blocking(stream: BinaryIO) -> Any:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    body = stream.read(length)
    if len(body) < length:
        return None
    return pickle.loads(body)


def _reply_frame(reply: tuple[Any, ...]) -> bytes:
    try:
        return _frame(reply)
    except TypeError:  # an exception that does not pickle: send its text instead
        group_id, outcomes, results, seconds = reply
        if isinstance(outcomes, BaseException):
            return _frame((group_id, RuntimeError(repr(outcomes)), results, seconds))
        safe = [
            (ok, value) if ok or _pickles(value) else (ok, RuntimeError(repr(value)))
            for ok, value in outcomes
        ]
        return _frame((group_id, safe, results, seconds))


def _pickles(value: object) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001 -- any failure means "send its text"
        return False
    return True


def child_main() -> None:
    from gateway.store.db import connect  # noqa: PLC0415 -- the child's imports
    from gateway.store.groups import run_batches  # noqa: PLC0415

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(os, "SCHED_BATCH"):
        # Waking this process (a group written to its stdin) must not preempt the event
        # loop that wrote it: the commit can wait a scheduler tick, the loop's uplinks not.
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    # The replies get stdout's pipe to themselves: anything else printed goes to stderr.
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    settings = _read_blocking(requests)
    if settings is None:
        return
    conn = connect(
        Path(settings["path"]),
        synchronous=settings["synchronous"],
        wal_autocheckpoint=settings["wal_autocheckpoint"],
        journal_size_limit=settings["journal_size_limit"],
    )
    checks: list[Any] = []
    try:
        replies.write(_frame(("ready", os.getpid())))
        replies.flush()
        while (request := _read_blocking(requests)) is not None:
            group_id, runs, new_checks = request
            if new_checks is not None:
                checks = new_checks
            started = time.perf_counter()
            try:
                outcomes, results = run_batches(conn, runs, checks)
                reply: tuple[Any, ...] = (
                    group_id,
                    outcomes,
                    results,
                    time.perf_counter() - started,
                )
            except Exception as exc:  # noqa: BLE001 -- the whole group failed: tell the parent
                reply = (group_id, exc, None, time.perf_counter() - started)
            replies.write(_reply_frame(reply))
            replies.flush()
    except BrokenPipeError:  # the parent is gone: nobody is waiting for the reply
        pass
    finally:
        conn.close()


if __name__ == "__main__":
    child_main()
