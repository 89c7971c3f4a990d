"""protocol/README.md's field tables say exactly what protocol/schema.py enforces.

A documentation check: it reads the README and the schema's tables on CPython (the behaviour
of those tables on both interpreters is test_schema.py's job). The gateway's NGSI-LD mapping
follows the README, so a key, range or default that drifts from the code fails here.
"""

import re
from pathlib import Path

import pytest

from protocol import schema

README = Path(__file__).resolve().parents[2] / "protocol" / "README.md"
TYPES = {
    schema.T_INT: "int",
    schema.T_BOOL: "bool",
    schema.T_ENUM: "enum",
    schema.T_TEXT: "text",
    schema.T_IDS: "ids",
}


def readme_tables():
    """{heading: [row cells]} for every '#### ...' table in the README."""
    tables = {}
    heading = None
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("#### "):
            heading = line[5:].strip()
            tables[heading] = []
        elif line.startswith("#"):
            heading = None  # a higher-level section: its tables are not field tables
        elif heading and line.startswith("| ") and not line.startswith("| key"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            tables[heading].append(cells)
    return tables


def documented(spec, direction, record="record"):
    key, name, kind, a, b, default = spec
    if kind == schema.T_ENUM:
        rng = " / ".join(f"{i} {n}" for i, n in enumerate(a))
    elif kind == schema.T_BOOL:
        rng = "—"
    else:
        rng = f"{a}..{b}"
    if default is schema.REQUIRED:
        dflt = "required"
    elif default is None:
        # configuration fields not sent leave the node's setting as it is
        config = direction == "downlink" and record.endswith(("config", "profile"))
        dflt = "unchanged" if config else "optional"
    elif isinstance(default, bool):
        dflt = "true" if default else "false"
    else:
        dflt = str(default)
    return [str(key), f"`{name}`", TYPES[kind], rng, dflt]


def row_core(cells):
    # key, name, type, range, default (the unit and Smart Data Models columns are prose)
    return [cells[0], cells[1], cells[2], cells[4], cells[5]]


def expected_tables():
    for direction, table in (("uplink", schema.UPLINK), ("downlink", schema.DOWNLINK)):
        for code, (name, fields) in enumerate(table):
            yield direction, code, name, fields


@pytest.mark.parametrize(
    ("direction", "code", "name", "fields"),
    list(expected_tables()),
    ids=[f"{d}-{n}" for d, _, n, _ in expected_tables()],
)
def test_readme_table_matches_schema(direction, code, name, fields):
    tables = readme_tables()
    headings = [h for h in tables if re.match(rf"{direction} `{name}` \(type {code}\)", h)]
    assert len(headings) == 1, f"README has no single table for {direction} {name}"
    rows = tables[headings[0]]
    assert all(len(r) == 7 for r in rows), "every row has 7 columns"
    assert [row_core(r) for r in rows] == [documented(f, direction, name) for f in fields]
    assert all(r[6] for r in rows), "every field names its Smart Data Models attribute (or —)"
    assert all(r[3] for r in rows), "every field has a unit (or —)"


def test_readme_common_uplink_fields():
    rows = readme_tables()["Every uplink record"]
    types = " / ".join(f"{i} {n}" for i, n in enumerate(schema.type_names(schema.UPLINK)))
    assert row_core(rows[0]) == ["0", "`type`", "enum", types, "required"]
    assert [row_core(r) for r in rows[1:]] == [
        documented(f, "uplink") for f in schema.UPLINK_COMMON
    ]


def test_readme_common_downlink_fields():
    rows = readme_tables()["Every downlink record"]
    types = " / ".join(f"{i} {n}" for i, n in enumerate(schema.type_names(schema.DOWNLINK)))
    assert row_core(rows[0]) == ["0", "`type`", "enum", types, "required"]
    assert [row_core(r) for r in rows[1:]] == [
        documented(f, "downlink") for f in schema.DOWNLINK_COMMON
    ]


def test_readme_has_no_table_for_unknown_types():
    names = {f"uplink `{n}`" for n in schema.type_names(schema.UPLINK)}
    names |= {f"downlink `{n}`" for n in schema.type_names(schema.DOWNLINK)}
    for heading in readme_tables():
        if heading.startswith(("uplink", "downlink")):
            assert heading.split(" (")[0] in names, heading
