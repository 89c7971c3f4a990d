"""gateway/security.py: aiocoap OSCORE credentials per node, and LoRa frames without transport,
checked against our node-side protocol.oscore under both interpreters."""

from __future__ import annotations

import json
import random
import resource
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import aiocoap
import pytest
from aiocoap import error, oscore
from aiocoap.credentials import CredentialsMap

from gateway import security
from gateway.security import (
    FrameRefused,
    NodeKeys,
    load_credentials,
    protect_reply,
    release,
    unprotect_frame,
    write_node_context,
)
from protocol import coap

GATEWAY_ID = b"\x01"
SALT = bytes(range(8))


def node_keys(i: int) -> NodeKeys:
    return NodeKeys(i.to_bytes(2, "big"), bytes([i % 256]) * 16, SALT)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    for i in range(1, 41):
        write_node_context(keys, f"node-{i}", node_keys(i), GATEWAY_ID)
    return keys


def test_context_folders_keep_secrets_private(tmp_path: Path) -> None:
    keys = NodeKeys.generate(b"\x07", id_context=b"site-a")
    assert len(keys.master_secret) == 16 and len(keys.master_salt) == 8
    assert keys.master_secret.hex() not in repr(keys)
    folder = write_node_context(tmp_path / "k", "leak-7", keys, GATEWAY_ID)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "secret.json").stat().st_mode) == 0o600
    secret = json.loads((folder / "secret.json").read_text())
    assert secret == {"secret_hex": keys.master_secret.hex(), "salt_hex": keys.master_salt.hex()}
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["sender-id_hex"] == "01" and settings["recipient-id_hex"] == "07"
    assert keys.master_secret.hex() not in (folder / "settings.json").read_text()
    # aiocoap derives the same keys as our node side from what was written
    from protocol.oscore import SecurityContext

    loaded = oscore.FilesystemSecurityContext(str(folder))
    ours = SecurityContext(keys.master_secret, b"\x07", GATEWAY_ID, keys.master_salt, b"site-a")
    assert (loaded.sender_key, loaded.recipient_key) == (ours.recipient_key, ours.sender_key)
    assert loaded.common_iv == ours.common_iv
    loaded._destroy()
    # Re-keying forgets the old sequence state.
    (folder / "sequence.json").write_text("{}")
    write_node_context(tmp_path / "k", "leak-7", NodeKeys.generate(b"\x07"), GATEWAY_ID)
    assert not (folder / "sequence.json").exists()
    for bad in ("", "../x", ".hidden"):
        with pytest.raises(ValueError):
            write_node_context(tmp_path / "k", bad, keys, GATEWAY_ID)


def test_readable_key_material_is_refused(keys_dir: Path) -> None:
    (keys_dir / "node-3" / "secret.json").chmod(0o644)
    with pytest.raises(PermissionError, match="node-3"):
        load_credentials(keys_dir)
    # the contexts opened before the refusal were released: loading works once fixed
    (keys_dir / "node-3" / "secret.json").chmod(0o600)
    release(load_credentials(keys_dir))


def test_index_agrees_with_aiocoaps_scan(keys_dir: Path) -> None:
    credentials = load_credentials(keys_dir)
    try:
        scan = CredentialsMap(credentials)  # aiocoap's own linear find_oscore over the same
        for i in range(1, 41):
            unprotected = {oscore.COSE_KID: i.to_bytes(2, "big")}
            found = credentials.find_oscore(unprotected)
            assert found.recipient_id == i.to_bytes(2, "big")
            assert found.authenticated_claims == [f"node-{i}"]
            assert found._context is scan.find_oscore(unprotected)
        for unknown in (
            {oscore.COSE_KID: b"\x09\x99"},
            {oscore.COSE_KID: b"\x00\x05", oscore.COSE_KID_CONTEXT: b"other"},
            {},
        ):
            with pytest.raises(KeyError):
                credentials.find_oscore(unknown)
            with pytest.raises(KeyError):
                scan.find_oscore(unknown)
        with pytest.raises(ValueError, match="already in use"):
            credentials[":twin"] = scan[":node-5"]
        label_5 = ":node-5"
        context_5 = credentials[label_5]
        del credentials[label_5]
        with pytest.raises(KeyError):
            credentials.find_oscore({oscore.COSE_KID: b"\x00\x05"})
        credentials[label_5] = context_5
        assert credentials.find_oscore({oscore.COSE_KID: b"\x00\x05"})._context is context_5
    finally:
        release(credentials)
    assert len(credentials) == 0


def test_release_writes_the_replay_window_back(keys_dir: Path) -> None:
    credentials = load_credentials(keys_dir)
    context = credentials[":node-1"]
    context.recipient_replay_window.strike_out(4)
    assert json.loads((keys_dir / "node-1" / "sequence.json").read_text())["received"] == (
        "unknown"
    )
    release(credentials)
    sequence = json.loads((keys_dir / "node-1" / "sequence.json").read_text())
    assert sequence["received"]["index"] <= 4
    # lock released: the same process can load the folder again
    release(load_credentials(keys_dir))


def test_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert security.raise_open_files_limit(min(soft, 64)) >= min(soft, 64)
    if hard != resource.RLIM_INFINITY:
        with pytest.raises(OSError, match="LimitNOFILE"):
            security.raise_open_files_limit(hard + 1)


def test_resources_refuse_unauthenticated_requests() -> None:
    plain = SimpleNamespace(remote=SimpleNamespace(authenticated_claims=[]))
    with pytest.raises(error.Unauthorized):
        security.require_node(plain)  # type: ignore[arg-type]
    assert security.request_seqno(plain) is None  # type: ignore[arg-type]
    node = SimpleNamespace(remote=SimpleNamespace(authenticated_claims=["leak-1"]))
    assert security.require_node(node) == "leak-1"  # type: ignore[arg-type]


# -- LoRa frames: our node side (both interpreters) against aiocoap on the gateway -----------


def _frame(mid: int, payload: bytes) -> bytes:
    return coap.Message(
        coap.CON, coap.POST, mid, b"\x42", coap.uri_path_options("r"), payload
    ).encode()


def _answer(req: security.FrameRequest) -> aiocoap.Message:
    return aiocoap.Message(code=aiocoap.CHANGED, payload=b"ok:" + req.request.payload)


def test_lora_frames_round_trip(interp, keys_dir: Path) -> None:
    oscore_mod = interp.module("protocol.oscore")
    client = interp.module("protocol.oscore_client")
    keys = node_keys(7)
    node = oscore_mod.SecurityContext(
        keys.master_secret, keys.recipient_id, GATEWAY_ID, keys.master_salt
    )
    credentials = load_credentials(keys_dir)
    try:
        for i in range(3):
            exchange = client.Exchange(node, _frame(100 + i, b"reading %d" % i))
            frame = exchange.first()
            req = unprotect_frame(credentials, frame)
            assert (req.node_id, req.seqno) == ("node-7", i)
            assert req.request.payload == b"reading %d" % i
            assert req.request.opt.uri_path == ("r",)
            reply = protect_reply(req, _answer(req))
            assert coap.decode(reply).mid == 100 + i and coap.decode(reply).type == coap.ACK
            action, plain = exchange.on_response(reply)
            assert action == client.DONE
            assert coap.decode(plain).payload == b"ok:reading %d" % i

        with pytest.raises(FrameRefused) as refused:
            unprotect_frame(credentials, frame)
        assert refused.value.reason == "replay" and refused.value.reply is None

        tampered = bytearray(client.Exchange(node, _frame(9, b"x")).first())
        tampered[-1] ^= 1
        stranger = oscore_mod.SecurityContext(bytes(16), b"\x0f\x0f", GATEWAY_ID, SALT)
        cases = {
            "bad_tag": bytes(tampered),
            "unknown_kid": stranger.protect_request(_frame(10, b"x")),
            "unauthenticated": _frame(11, b"plain"),
            "malformed": b"\x40",
        }
        for reason, data in cases.items():
            with pytest.raises(FrameRefused) as refused:
                unprotect_frame(credentials, data)
            assert refused.value.reason == reason
    finally:
        release(credentials)


def test_lora_echo_recovery_after_a_crash(interp, keys_dir: Path, tmp_path: Path) -> None:
    oscore_mod = interp.module("protocol.oscore")
    client = interp.module("protocol.oscore_client")
    keys = node_keys(7)
    node = oscore_mod.SecurityContext(
        keys.master_secret, keys.recipient_id, GATEWAY_ID, keys.master_salt
    )
    credentials = load_credentials(keys_dir)
    old = client.Exchange(node, _frame(1, b"before crash")).first()
    unprotect_frame(credentials, old)
    # A crash leaves the folder as it is now (replay window marked unknown on disk, lock
    # file stale): a copy of it is what the restarted gateway finds.
    crashed = tmp_path / "after-crash"
    shutil.copytree(keys_dir, crashed, ignore=shutil.ignore_patterns("lock"))
    release(credentials)
    credentials = load_credentials(crashed)
    try:
        with pytest.raises(FrameRefused) as refused:
            unprotect_frame(credentials, old)  # a replay is challenged, never accepted
        assert refused.value.reason == "replay"

        exchange = client.Exchange(node, _frame(2, b"after crash"))
        with pytest.raises(FrameRefused) as refused:
            unprotect_frame(credentials, exchange.first())
        challenge = refused.value.reply
        assert challenge is not None and coap.decode(challenge).option(coap.OSCORE) is not None
        action, repeat = exchange.on_response(challenge)
        assert action == client.SEND
        req = unprotect_frame(credentials, repeat)
        assert req.request.payload == b"after crash"
        action, plain = exchange.on_response(protect_reply(req, _answer(req)))
        assert action == client.DONE and coap.decode(plain).payload == b"ok:after crash"
        with pytest.raises(FrameRefused, match="replay"):
            unprotect_frame(credentials, repeat)
    finally:
        release(credentials)


def test_garbage_frames_only_ever_raise_frame_refused(keys_dir: Path) -> None:
    credentials = load_credentials(keys_dir)
    rng = random.Random(11)
    try:
        for _ in range(2000):
            head = rng.choice([b"", b"\x40\x02\x00\x01", b"\x41\x02\x00\x01\x42\x92\x09"])
            frame = head + rng.randbytes(rng.randrange(0, 40))
            with pytest.raises(FrameRefused) as refused:
                unprotect_frame(credentials, frame)
            assert refused.value.reason in security_reasons()
    finally:
        release(credentials)


def security_reasons() -> tuple[str, ...]:
    from gateway.links.base import REFUSAL_REASONS

    return REFUSAL_REASONS
