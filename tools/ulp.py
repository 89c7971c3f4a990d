"""Assemble the ESP32 ULP programs on the host, so the node does not spend its RAM on an assembler.

The assembler is micropython-esp32-ulp (`esp32_ulp`, installed into the venv by dev/setup.sh: its
sdist cannot be pip-installed). It is written for MicroPython: it encodes instructions through
`uctypes` bit-field structs, imports `ucollections`, and its package `__init__` and assembler
call `gc.mem_free()`. On CPython those come from the small stand-ins below; nothing else of it
changes. Its preprocessor (C `#define`s, needing `btree`) is not used: the sources use `.set`.

    program = assemble(SOURCE.read_text())
    program.binary        the ULP binary as esp32.ULP.load_binary() takes it (12-byte header,
                          .text, .data; .bss zeroed by the loader)
    program.symbols       {label: 32-bit word address in RTC slow memory} for each .global label
    module_text(program)  the Python module the image carries for the board (ulp_pulse.py)
"""

from __future__ import annotations

import collections
import importlib
import importlib.util
import struct
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "firmware/boards/esp32/ulp_pulse.S"
MODULE = "ulp_pulse"  # the generated module's name at the flash root
ULP_MAGIC = 0x00706C75  # b"ulp\0", as ESP-IDF's ulp_load_binary checks it
HEADER = "<IHHHH"  # magic, text offset, text size, data size, bss size


class ULPError(Exception):
    pass


@dataclass(frozen=True)
class Program:
    binary: bytes
    symbols: dict[str, int]

    @property
    def words(self) -> list[int]:
        """The program's 32-bit words as loaded at word 0 of RTC slow memory (text, data)."""
        _magic, offset, text, data, _bss = struct.unpack_from(HEADER, self.binary)
        body = self.binary[offset : offset + text + data]
        return [int.from_bytes(body[i : i + 4], "little") for i in range(0, len(body), 4)]


# -- stand-ins for the MicroPython modules esp32_ulp imports -------------------------------------
# uctypes: only what esp32_ulp.opcodes uses, a little-endian 32-bit word of bit fields
_BF_POS = 17
_BF_LEN = 22
_BFUINT32 = 1 << 28
_UINT32 = 2 << 28


class _Word:
    _layout: dict[str, int]
    _value: int

    def __init__(self, layout: dict[str, int]) -> None:
        object.__setattr__(self, "_layout", layout)
        object.__setattr__(self, "_value", 0)

    def _field(self, name: str) -> tuple[int, int]:
        spec = self._layout[name]
        if spec == _UINT32:
            return 0, 32
        return (spec >> _BF_POS) & 0x1F, (spec >> _BF_LEN) & 0x3F

    def __getattr__(self, name: str) -> int:
        pos, width = self._field(name)
        return int((self._value >> pos) & ((1 << width) - 1))

    def __setattr__(self, name: str, value: int) -> None:
        pos, width = self._field(name)
        mask = ((1 << width) - 1) << pos
        object.__setattr__(self, "_value", (self._value & ~mask) | ((value << pos) & mask))


def _uctypes() -> types.ModuleType:
    mod = types.ModuleType("uctypes")
    mod.__dict__.update(
        BF_POS=_BF_POS,
        BF_LEN=_BF_LEN,
        BFUINT32=_BFUINT32,
        UINT32=_UINT32,
        UINT16=3 << 28,
        LITTLE_ENDIAN=0,
        addressof=lambda buf: 0,
        struct=lambda _addr, layout, _endian=0: _Word(layout),
    )
    return mod


def _load() -> Any:
    if "esp32_ulp.assemble" in sys.modules:
        return sys.modules["esp32_ulp.assemble"]
    spec = importlib.util.find_spec("esp32_ulp")
    if spec is None or spec.submodule_search_locations is None:
        raise ULPError(
            "the ULP assembler (micropython-esp32-ulp, module esp32_ulp) is not installed:"
            " run dev/setup.sh"
        )
    sys.modules.setdefault("uctypes", _uctypes())
    sys.modules.setdefault("ucollections", collections)
    # the package's __init__ would call gc.mem_free() at import: stand in an empty package
    # object with the real folder, so only the modules below are imported from it
    pkg = types.ModuleType("esp32_ulp")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["esp32_ulp"] = pkg
    util = importlib.import_module("esp32_ulp.util")
    setattr(util, "garbage_collect", lambda msg, verbose=False: None)  # noqa: B010
    return importlib.import_module("esp32_ulp.assemble")


def assemble(source: str) -> Program:
    asm = _load()
    assembler = asm.Assembler()
    try:
        assembler.assemble(source)
    except (ValueError, TypeError, KeyError) as exc:
        raise ULPError(f"ULP assembler: {exc}") from None
    text, data, bss = assembler.fetch()
    header = struct.pack(HEADER, ULP_MAGIC, 12, len(text), len(data), bss)
    symbols = {name: int(addr) for addr, name in assembler.symbols.export()}
    return Program(header + text + data, symbols)


def module_text(program: Program, source: Path = SOURCE) -> str:
    """The module the board imports: the binary and each .global label's word address."""
    lines = [
        f"# Generated by tools/ulp.py from {source.relative_to(ROOT).as_posix()}: do not edit.",
        "# Word addresses in RTC slow memory (the program is loaded at word 0).",
        f"BINARY = {program.binary!r}",
    ]
    lines += [f"{name.upper()} = {addr}" for name, addr in sorted(program.symbols.items())]
    return "\n".join(lines) + "\n"
