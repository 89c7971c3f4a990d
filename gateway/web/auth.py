"""Who may do what on the page: sessions, CSRF, roles, the login rate limit, the audit log.

- Sessions: a random 256-bit token in a cookie (HttpOnly, SameSite=Strict, Path=/; under HTTPS
  also Secure and the `__Host-` name prefix, which browsers only accept from a secure origin
  for the whole host). The database keeps only its SHA-256, so a copy of the database opens
  no session. A session ends at logout, after SESSION_S, or when its account is removed or
  changed from the command line.
- CSRF: every state-changing request (any method but GET/HEAD/OPTIONS) must carry the
  session's token (form field `csrf` or header `X-CSRF-Token`). Before login, the login and
  language forms use a double-submit token (a cookie and the same value in the form). A
  request whose Origin header names another site is refused as well.
- Roles: `viewer` sees everything, `operator` may also act (downlinks, acknowledging alarms).
- Login attempts: at most LIMIT_PER_USER failures per account and LIMIT_PER_ADDRESS per
  client address within LIMIT_WINDOW_S, then 429 until the window frees up. Password checks
  run in a thread, two at a time, so a flood of logins cannot stall the event loop or eat the
  Pi's memory (scrypt takes 32 MiB each).
- Audit: logins (also failed and refused ones), logouts, every action; kept in the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway import accounts
from gateway.store.db import Database

SESSION_S = 12 * 3600  # a working day; then log in again
LIMIT_PER_USER = 5
LIMIT_PER_ADDRESS = 20
LIMIT_WINDOW_S = 300.0
LIMIT_KEYS = 10_000  # distinct users/addresses remembered (oldest forgotten first)
AUDIT_KEEP = 20_000
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

SESSION: web.RequestKey[Session | None] = web.RequestKey("web.session", object)  # type: ignore[arg-type]
PRE_TOKEN: web.RequestKey[str] = web.RequestKey("web.pre_token", str)


@dataclass(frozen=True, slots=True)
class Session:
    token_hash: str
    username: str
    role: str
    csrf: str
    expires_at: float

    @property
    def operator(self) -> bool:
        return self.role == "operator"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def cookie_name(request: web.Request, base: str) -> str:
    return f"__Host-{base}" if request.secure else base


def set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    base: str,
    value: str,
    max_age: int | None = None,
) -> None:
    response.set_cookie(
        cookie_name(request, base),
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=request.secure,
        samesite="Strict",
    )


class Sessions:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def lookup(self, token: str | None) -> Session | None:
        if not token or len(token) > 100:
            return None
        hashed, now = token_hash(token), self.clock()

        def work(conn: sqlite3.Connection) -> Session | None:
            row = conn.execute(
                "SELECT s.token_hash, s.username, a.role, s.csrf, s.expires_at"
                " FROM web_sessions s JOIN web_accounts a ON a.username = s.username"
                " WHERE s.token_hash = ? AND s.expires_at > ?",
                (hashed, now),
            ).fetchone()
            return Session(*row) if row else None

        return await self.db.read(work)

    async def create(self, username: str) -> tuple[str, Session]:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(token_hash(token), username, "", csrf, now + SESSION_S)

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM web_sessions WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO web_sessions(token_hash, username, csrf, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (session.token_hash, username, csrf, now, session.expires_at),
            )

        await self.db.transact(work)
        return token, session

    async def end(self, session: Session) -> None:
        await self.db.transact(
            lambda conn: conn.execute(
                "DELETE FROM web_sessions WHERE token_hash = ?", (session.token_hash,)
            )
        )

    async def account(self, username: str) -> tuple[str, str] | None:
        """(role, password hash) of an account."""

        def work(conn: sqlite3.Connection) -> tuple[str, str] | None:
            row = conn.execute(
                "SELECT role, password FROM web_accounts WHERE username = ?", (username,)
            ).fetchone()
            return (str(row[0]), str(row[1])) if row else None

        return await self.db.read(work)

    async def rehash(self, username: str, password: str) -> None:
        stored = await asyncio.get_running_loop().run_in_executor(
            None, accounts.hash_password, password
        )
        await self.db.transact(
            lambda conn: conn.execute(
                "UPDATE web_accounts SET password = ? WHERE username = ?", (stored, username)
            )
        )


class LoginLimiter:
    """Failed logins per key within a sliding window; bounded memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.checks = asyncio.Semaphore(2)

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.get(key)
        if stamps is None:
            return deque()
        while stamps and stamps[0] <= now - LIMIT_WINDOW_S:
            stamps.popleft()
        return stamps

    def wait_s(self, address: str, username: str) -> float:
        """0 when a login may be tried now; else the seconds until one may."""
        now = self.clock()
        wait = 0.0
        for key, limit in ((f"u:{username}", LIMIT_PER_USER), (f"a:{address}", LIMIT_PER_ADDRESS)):
            stamps = self._recent(key, now)
            if len(stamps) >= limit:
                wait = max(wait, stamps[len(stamps) - limit] + LIMIT_WINDOW_S - now)
        return wait

    def failed(self, address: str, username: str) -> None:
        now = self.clock()
        for key in (f"u:{username}", f"a:{address}"):
            stamps = self._recent(key, now)
            stamps.append(now)
            self._failures[key] = stamps
            self._failures.move_to_end(key)
        while len(self._failures) > LIMIT_KEYS:
            self._failures.popitem(last=False)

    def succeeded(self, username: str) -> None:
        self._failures.pop(f"u:{username}", None)


class Audit:
    def __init__(self, db: Database, on_change: Callable[[], None]) -> None:
        self.db = db
        self.on_change = on_change

    async def record(
        self,
        username: str,
        action: str,
        target: str = "",
        detail: str = "",
        *,
        address: str = "",
        outcome: str = "ok",
    ) -> None:
        row = (time.time(), username[:64], action, target[:200], detail[:1000], address, outcome)

        def work(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "INSERT INTO web_audit(at, username, action, target, detail, address, outcome)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            if cursor.lastrowid is not None and cursor.lastrowid % 500 == 0:
                conn.execute(
                    "DELETE FROM web_audit WHERE id <= ?", (cursor.lastrowid - AUDIT_KEEP,)
                )

        await self.db.transact(work)
        self.on_change()

    async def recent(self, limit: int = 200) -> list[tuple[float, str, str, str, str, str, str]]:
        def work(conn: sqlite3.Connection) -> list[tuple[float, str, str, str, str, str, str]]:
            return conn.execute(
                "SELECT at, username, action, target, detail, address, outcome FROM web_audit"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()

        return await self.db.read(work)


def client_address(request: web.Request) -> str:
    # The gateway is reached directly on the site network (no proxy): the peer is the client.
    return request.remote or "?"


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another site (or an opaque one)."""
    origin = request.headers.get("Origin")
    if origin is None:  # not every browser sends it on same-origin posts: the token decides
        return True
    return origin == f"{request.scheme}://{request.host}"


async def csrf_ok(request: web.Request, session: Session | None) -> bool:
    sent = request.headers.get("X-CSRF-Token", "")
    if not sent and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        form = await request.post()
        value = form.get("csrf", "")
        sent = value if isinstance(value, str) else ""
    if session is not None:
        expected = session.csrf
    else:
        expected = request.cookies.get(cookie_name(request, "gw_pre"), "")
    return bool(sent) and bool(expected) and hmac.compare_digest(sent, expected)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
