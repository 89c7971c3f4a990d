"""Accounts of the field staff web page: created from the command line, never by default.

    city-gateway --config gateway.toml account add NAME --role operator   (asks the password)
    city-gateway --config gateway.toml account add NAME --role viewer --password-stdin
    city-gateway --config gateway.toml account passwd NAME
    city-gateway --config gateway.toml account role NAME viewer
    city-gateway --config gateway.toml account list
    city-gateway --config gateway.toml account remove NAME

There is no default account and no default password: until someone with a shell on the
gateway (as the service user) adds one, nobody can log in. Removing an account, changing its
password or its role ends its open sessions at once.

Passwords are hashed with scrypt (memory-hard, in the standard library, so nothing to install
on the Pi): N=2^15, r=8, p=1 takes 32 MiB and about a tenth of a second on a PC, a few tenths
on a Raspberry Pi 4. The parameters are stored with each hash, so raising them later rehashes
each password at its next successful login.

The tables live in the gateway database beside the registry (same file, same permissions).
"""

from __future__ import annotations

import argparse
import base64
import functools
import getpass
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.store.db import apply_schema, connect

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

SCHEMA = """
CREATE TABLE IF NOT EXISTS web_accounts(
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS web_sessions(
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions(username);
CREATE TABLE IF NOT EXISTS web_audit(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    username TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL DEFAULT 'ok'
);
"""

ROLES = ("viewer", "operator")
USERNAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # hashing cost grows with length: refuse absurd inputs up front

SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_MAXMEM = 128 * 1024 * 1024


class AccountError(ValueError):
    """An invalid name, role or password, or an account that exists (add) or does not."""


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    role: str
    created_at: float
    updated_at: float


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """`scrypt$N$r$p$salt$hash`: the parameters travel with the hash."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32
    )
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str) -> bool:
    parts = stored.split("$")
    return len(parts) != 6 or parts[1:4] != [str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P)]


@functools.cache
def dummy_hash() -> str:
    """A hash of a random password: checked when the username is unknown, so a failed login
    takes the same time whether or not the account exists."""
    return hash_password(secrets.token_urlsafe(16))


def check_username(username: str) -> str:
    if not USERNAME.fullmatch(username):
        raise AccountError(
            f"username {username!r}: use 1-32 lowercase letters, digits, '_', '.' or '-'"
        )
    return username


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"role {role!r}: must be one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is limited to {MAX_PASSWORD} characters")
    return password


# -- synchronous operations on a connection (the CLI; tests) --------------------------------


def add_account(
    conn: sqlite3.Connection, username: str, role: str, password: str, now: float | None = None
) -> Account:
    now = time.time() if now is None else now
    check_username(username)
    check_role(role)
    stored = hash_password(check_password(password))
    try:
        conn.execute(
            "INSERT INTO web_accounts(username, role, password, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (username, role, stored, now, now),
        )
    except sqlite3.IntegrityError:
        raise AccountError(f"account {username!r} already exists") from None
    return Account(username, role, now, now)


def set_password(conn: sqlite3.Connection, username: str, password: str) -> None:
    stored = hash_password(check_password(password))
    _change(conn, username, "password = ?", stored)


def set_role(conn: sqlite3.Connection, username: str, role: str) -> None:
    _change(conn, username, "role = ?", check_role(role))


def _change(conn: sqlite3.Connection, username: str, assignment: str, value: str) -> None:
    cursor = conn.execute(
        f"UPDATE web_accounts SET {assignment}, updated_at = ? WHERE username = ?",
        (value, time.time(), username),
    )
    if cursor.rowcount == 0:
        raise AccountError(f"account {username!r} does not exist")
    end_sessions(conn, username)


def remove_account(conn: sqlite3.Connection, username: str) -> None:
    if conn.execute("DELETE FROM web_accounts WHERE username = ?", (username,)).rowcount == 0:
        raise AccountError(f"account {username!r} does not exist")
    end_sessions(conn, username)


def end_sessions(conn: sqlite3.Connection, username: str) -> None:
    conn.execute("DELETE FROM web_sessions WHERE username = ?", (username,))


def list_accounts(conn: sqlite3.Connection) -> list[Account]:
    rows = conn.execute(
        "SELECT username, role, created_at, updated_at FROM web_accounts ORDER BY username"
    )
    return [Account(*row) for row in rows]


# -- the `account` subcommand of city-gateway -----------------------------------------------


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    account = commands.add_parser("account", help="manage the web page's accounts").add_subparsers(
        dest="account_command", required=True
    )
    add = account.add_parser("add", help="create an account (asks for its password)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    passwd = account.add_parser("passwd", help="change an account's password")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    role = account.add_parser("role", help="change an account's role")
    role.add_argument("username")
    role.add_argument("role", choices=ROLES)
    account.add_parser("list", help="list accounts")
    remove = account.add_parser("remove", help="delete an account and end its sessions")
    remove.add_argument("username")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise AccountError("the two passwords differ")
    return first


def command(config: GatewayConfig, args: argparse.Namespace) -> int:
    """Run `account ...`; 0 done, 1 refused."""
    os.umask(0o077)  # a database created here must be the service user's alone
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = connect(config.database_path)
    try:
        apply_schema(conn, [SCHEMA])
        if args.account_command == "list":
            for account in list_accounts(conn):
                print(f"{account.username}\t{account.role}")
            return 0
        password = ""
        if args.account_command in ("add", "passwd"):
            password = check_password(_read_password(args.password_stdin))
        conn.execute("BEGIN IMMEDIATE")
        try:
            if args.account_command == "add":
                add_account(conn, args.username, args.role, password)
                message = f"added {args.username} ({args.role})"
            elif args.account_command == "passwd":
                set_password(conn, args.username, password)
                message = f"changed the password of {args.username}"
            elif args.account_command == "role":
                set_role(conn, args.username, args.role)
                message = f"{args.username} is now {args.role}"
            else:
                remove_account(conn, args.username)
                message = f"removed {args.username}"
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        print(message)
        return 0
    except AccountError as exc:
        print(f"city-gateway: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
