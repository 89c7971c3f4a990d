"""The embedded default upstream: readings appended to local JSON-lines files, rotated by size.

A gateway with no network upstream configured still keeps every reading, in a form any tool
can read later (one JSON object a line, the same document the MQTT sink publishes, with the
stable reading id inside so a reader can drop the duplicates a resend after a crash leaves).

Files in the spool directory:
- `current.jsonl`: being appended to. A reading is reported delivered only after its line has
  been written and fsync'd, so a power cut never loses a reading the store has let go of.
- `readings-00000001.jsonl`, ...: rotated, complete, never written again; the sequence number
  orders them. A collector may move them away; with `keep_files` set the oldest are deleted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.records import Reading
from gateway.sinks.base import SendResult, SinkUnavailable
from gateway.sinks.entities import MappingError, check_name, reading_json

log = logging.getLogger(__name__)

CURRENT = "current.jsonl"
_ROTATED = re.compile(r"^readings-(\d{8})\.jsonl$")


class SpoolSink:
    """Append readings to `directory`; rotate `current.jsonl` once it would pass `rotate_bytes`."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        site: str,
        *,
        rotate_bytes: int = 16 * 1024 * 1024,
        keep_files: int = 0,
        max_batch: int = 1000,
        name: str = "spool",
    ) -> None:
        if rotate_bytes < 1:
            raise ValueError("rotate_bytes must be positive")
        if keep_files < 0:
            raise ValueError("keep_files must be 0 (keep all) or positive")
        self.name = name
        self.max_batch = max_batch
        self.site = check_name("site", site)
        self.directory = Path(directory)
        self.rotate_bytes = rotate_bytes
        self.keep_files = keep_files
        self._fd: int | None = None
        self._size = 0
        self._next_seq = 1
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self._fd is None:
                await asyncio.to_thread(self._open)

    async def close(self) -> None:
        async with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        result = SendResult()
        lines: list[bytes] = []
        ids: list[str] = []
        for reading in batch:
            try:
                lines.append(reading_json(reading, self.site) + b"\n")
            except MappingError as exc:
                result.rejected[reading.reading_id] = str(exc)
                continue
            ids.append(reading.reading_id)
        if lines:
            async with self._lock:
                try:
                    if self._fd is None:
                        await asyncio.to_thread(self._open)
                    await asyncio.to_thread(self._append, b"".join(lines))
                except OSError as exc:
                    raise SinkUnavailable(f"spool {self.directory}: {exc}") from exc
            result.delivered.update(ids)
        return result

    def rotated_files(self) -> list[Path]:
        """The complete files, oldest first."""
        found = []
        for path in self.directory.iterdir():
            match = _ROTATED.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return [path for _, path in sorted(found)]

    # Blocking file work, run in a thread so the event loop keeps serving the links.

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        rotated = self.rotated_files()
        if rotated:
            last = _ROTATED.match(rotated[-1].name)
            assert last is not None
            self._next_seq = int(last.group(1)) + 1
        path = self.directory / CURRENT
        created = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = self._drop_torn_tail(path)
        if created:
            _fsync_dir(self.directory)

    def _drop_torn_tail(self, path: Path) -> int:
        """A crash mid-write can leave half a line; it was never reported delivered: cut it."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0:
            return 0
        with path.open("rb") as f:
            # Read back in chunks until the last newline: lines are small, so this is short.
            end = size
            while end > 0:
                start = max(0, end - 65536)
                f.seek(start)
                chunk = f.read(end - start)
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    keep = start + cut + 1
                    break
                end = start
            else:
                keep = 0
        if keep != size:
            log.warning("spool %s: dropped %d bytes of a torn last line", path, size - keep)
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
        return keep

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            raise OSError("spool is closed")
        if self._size and self._size + len(data) > self.rotate_bytes:
            self._rotate()
        before = self._size
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError:
            # Leave no partial batch behind: the whole batch is retried later.
            try:
                os.ftruncate(self._fd, before)
            except OSError:
                log.exception("spool %s: could not undo a failed write", self.directory)
            raise
        self._size = before + len(data)

    def _rotate(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        target = self.directory / f"readings-{self._next_seq:08d}.jsonl"
        os.replace(self.directory / CURRENT, target)
        self._next_seq += 1
        self._fd = os.open(
            self.directory / CURRENT, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o640
        )
        self._size = 0
        _fsync_dir(self.directory)
        if self.keep_files:
            rotated = self.rotated_files()
            for old in rotated[: max(0, len(rotated) - self.keep_files)]:
                log.warning(
                    "spool %s: keep_files=%d reached, deleting %s",
                    self.directory,
                    self.keep_files,
                    old.name,
                )
                old.unlink()


def _fsync_dir(directory: Path) -> None:
    """Make a created or renamed file's directory entry survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def from_config(config: GatewayConfig) -> SpoolSink:
    """The `[sinks.spool]` section as a sink (the agent builds every enabled sink this way)."""
    section = config.sinks.spool
    return SpoolSink(
        section.path,
        config.site_id,
        rotate_bytes=section.rotate_bytes,
        keep_files=section.keep_files,
    )
