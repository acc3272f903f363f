"""Per-table row counts and checksums, taken the same way on the source and on a restored copy.

Logical backups since opsdag's Backups v2 use ``copy-sha256-v1`` (copy_checksum.py): the
sha256 of the table's COPY text, taken from pg_dump's own data files while they are written
(no second scan). This module compares any method and keeps the two older ones, which
physical backups still use and older logical backups' manifests name:

A table's checksum is the sum over its rows of a 64-bit hash of the row, so it does not
depend on the physical order of the rows (a restore reorders nothing but a later VACUUM
FULL could) and duplicated rows count twice. Two ways to hash a row, chosen per table and
written in the manifest so that the drill hashes the same way:

- ``record-hash-v1``: ``hash_record_extended(row, 0)`` (PostgreSQL 14+). Hashes the binary
  values with each type's own hash function: fast (no text conversion) and independent of
  session settings. Needs every column type to have an extended hash function.
- ``text-hash-v1``: ``hashtextextended(row::text, 0)`` for tables with a column type that
  has none (json, point, ...), with the settings that shape text output pinned
  (``SESSION_SETTINGS``).

Hashes are PostgreSQL's own, which differ between little- and big-endian machines: a
drill must restore onto the same architecture to compare checksums (counts always compare).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from opsdag.backups.pg import qualified

RECORD_HASH = "record-hash-v1"
TEXT_HASH = "text-hash-v1"
COPY_SHA256 = "copy-sha256-v1"

SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}

# Tables whose rows a logical dump carries: ordinary tables (partitions included, the
# partitioned parents hold no rows), not temporary, not members of an extension.
TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class TableStats:
    schema: str
    name: str
    rows: int
    checksum: str | None = None
    method: str | None = None
    columns: list[str] | None = None  # copy-sha256-v1: the dump's COPY column list

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["columns"] is None:
            del data["columns"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableStats:
        return cls(
            schema=data["schema"],
            name=data["name"],
            rows=int(data["rows"]),
            checksum=data.get("checksum"),
            method=data.get("method"),
            columns=data.get("columns"),
        )


def pin_session(conn: Any) -> None:
    """Fix the settings that shape a row's text (call outside a transaction)."""
    for key, value in SESSION_SETTINGS.items():
        conn.execute(f"SET {key} = '{value}'")


def list_tables(conn: Any) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(TABLES_SQL).fetchall()]


def hash_method(conn: Any, schema: str, name: str) -> str:
    """``record-hash-v1`` when every column type can be hashed, else ``text-hash-v1``.

    ``jsonb_populate_record(NULL::t, '{}')`` is a row of the table's type with every field
    NULL: hashing it looks up every column's hash function without reading any row.
    """
    probe = f"SELECT hash_record_extended(jsonb_populate_record(NULL::{qualified(schema, name)}, '{{}}'), 0)"
    if conn.info.server_version < 140000:
        return TEXT_HASH
    try:
        with conn.transaction():  # a savepoint when already in a transaction
            conn.execute(probe)
    except Exception:  # undefined hash function for some column type
        return TEXT_HASH
    return RECORD_HASH


def table_stats(
    conn: Any, schema: str, name: str, *, checksum: bool, method: str | None = None
) -> TableStats:
    """Count (and checksum) one table's own rows (``ONLY``: not those of its children)."""
    table = qualified(schema, name)
    if not checksum:
        rows = conn.execute(f"SELECT count(*) FROM ONLY {table}").fetchone()[0]
        return TableStats(schema, name, int(rows))
    method = method or hash_method(conn, schema, name)
    row_hash = "hash_record_extended(t, 0)" if method == RECORD_HASH else "hashtextextended(t::text, 0)"
    rows, total = conn.execute(
        f"SELECT count(*), coalesce(sum({row_hash}), 0)::text FROM ONLY {table} t"
    ).fetchone()
    return TableStats(schema, name, int(rows), str(total), method)


def capture(conn: Any, *, checksum: bool, tables: list[tuple[str, str]] | None = None) -> list[TableStats]:
    """Stats of every dumped table, in the connection's current transaction (its snapshot)."""
    return [table_stats(conn, s, n, checksum=checksum) for s, n in (tables or list_tables(conn))]


def capture_like(
    conn: Any, expected: list[TableStats], settings: dict[str, str] | None = None
) -> dict[str, TableStats | str]:
    """Stats of a restored copy for the tables of a manifest, hashed the way the manifest says.

    ``settings``: the manifest's ``table_checksum_settings`` (copy-sha256-v1 tables).
    A table that is missing or cannot be read maps to the error message instead.
    """
    from opsdag.backups import copy_checksum

    found: dict[str, TableStats | str] = {}
    present = set(list_tables(conn))
    by_copy: list[tuple[str, str, list[str]]] = []
    for want in expected:
        if (want.schema, want.name) not in present:
            found[want.key] = "table missing"
            continue
        if want.method == COPY_SHA256:
            columns = want.columns
            if columns is None:
                columns = copy_checksum.restored_columns(conn, want.schema, want.name)
            by_copy.append((want.schema, want.name, columns))
            continue
        try:
            with conn.transaction():
                found[want.key] = table_stats(
                    conn, want.schema, want.name, checksum=want.checksum is not None, method=want.method
                )
        except Exception as exc:
            found[want.key] = f"cannot be read: {str(exc).strip().splitlines()[0]}"
    if by_copy:
        use = settings or copy_checksum.session_settings(conn)
        digests = copy_checksum.digest_tables(copy_checksum.target_of(conn), by_copy, use)
        for schema, name, columns in by_copy:
            got = digests[f"{schema}.{name}"]
            found[f"{schema}.{name}"] = (
                got
                if isinstance(got, str)
                else TableStats(schema, name, got[0], got[1], COPY_SHA256, columns)
            )
    return found


@dataclass(frozen=True)
class TableComparison:
    table: str
    expected_rows: int
    actual_rows: int | None
    expected_checksum: str | None
    actual_checksum: str | None
    ok: bool
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(expected: list[TableStats], actual: dict[str, TableStats | str]) -> list[TableComparison]:
    """Table by table: same row count and (when the manifest has one) the same checksum."""
    out = []
    for want in expected:
        got = actual.get(want.key, "table missing")
        if isinstance(got, str):
            out.append(TableComparison(want.key, want.rows, None, want.checksum, None, False, got))
            continue
        problems = []
        if got.rows != want.rows:
            problems.append(f"{got.rows} rows, expected {want.rows}")
        if want.checksum is not None and got.checksum != want.checksum:
            problems.append("checksum differs")
        out.append(
            TableComparison(
                want.key, want.rows, got.rows, want.checksum, got.checksum, not problems, "; ".join(problems)
            )
        )
    return out
