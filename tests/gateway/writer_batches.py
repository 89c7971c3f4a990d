"""Batches for tests/gateway/test_store_writer.py, in a module of their own: the database's
writer process unpickles them by reference, so it imports this module (and nothing heavier).

`Notes` writes text notes; each result says which process ran it, so a test can tell the
writer process from the thread. A note "dup:..." already stored makes the insert fail (the
UNIQUE constraint), so it fails alone; a note "die" ends the process that runs it before
its transaction commits (in the thread it is an ordinary note, as it would be after a
real crash of the child).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence

SCHEMA = "CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);"
DIE = "die"


class Notes:
    writer_process = True

    def __init__(self, die_in: int | None = None) -> None:
        self.die_in = die_in  # the pid of the writer process that "die" must end

    def run(self, conn: sqlite3.Connection, items: Sequence[str]) -> list[tuple[int, int]]:
        """(note id, pid of the process that wrote it) per note; set-based like the real one."""
        if DIE in items and os.getpid() == self.die_in:
            os._exit(9)  # a crash in the middle of the transaction
        first = conn.execute(
            "INSERT INTO notes(text) SELECT value FROM json_each(?) ORDER BY key",
            (json.dumps(list(items)),),
        ).lastrowid
        assert first is not None
        return [(first - len(items) + 1 + i, os.getpid()) for i in range(len(items))]


def notes(path: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT text FROM notes ORDER BY id")]
