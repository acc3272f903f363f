"""The ``copy-sha256-v1`` table checksum: sha256 of a table's COPY text, and how both sides agree.

The backup side takes it from pg_dump's own data files as they are written
(``dump_digest``); a drill recomputes it on the restored copy with the same command,
``COPY <table> (<columns>) TO STDOUT``, under the same session settings, through ``psql``
(one process per table, two at a time: the COPY text streams through a pipe and is hashed
in 1 MB blocks, about 3x faster than reading it row by row through psycopg).

What makes the two texts byte-identical:

- Settings that shape a value's text: pg_dump sets DateStyle ISO, IntervalStyle postgres,
  extra_float_digits 3, an empty search_path (reg* types) and row_security off itself;
  opsdag pins TimeZone, bytea_output and lc_monetary for pg_dump (``PGOPTIONS``) and the
  client encoding (``--encoding``), records them in the manifest
  (``table_checksum_settings``) and uses exactly them in the drill.
- The column list: pg_dump copies the non-dropped, non-generated columns in attnum order;
  the manifest records that list per table, so a restored table whose columns were
  created in another order (inheritance) is read in the dump's order.
- Row order: a table restored by pg_restore is filled by one COPY into a new heap, and a
  sequential scan returns a never-updated heap in insertion order, i.e. the dump's order.
  ``synchronize_seqscans = off`` is essential: with it on, a scan of a large table may
  start where another scan is (measured: psql's COPY began at row 6,745,137 of 7,000,000).
  If the order ever differed (a VACUUM FULL or an update between restore and check), the
  drill reports "checksum differs": a false alarm, never a false "identical".

Strength: sha256 over the whole text detects any changed value and, with the row count,
any missing or duplicated row. The hash is over text, so it is independent of the
machine's byte order (record-hash-v1 was not). Output functions of extension types
may read other settings: those are not pinned.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opsdag.backups.pg import PgTarget, ToolError, pg_tool, qualified, quote_ident

METHOD = "copy-sha256-v1"
# Pinned the same way for pg_dump (PGOPTIONS) and the drill's psql; pg_dump sets the rest.
PINNED = {"TimeZone": "UTC", "bytea_output": "hex"}
# What pg_dump sets on its own connections (pg_dump.c setup_connection), set by the drill.
PG_DUMP_SETS = {
    "DateStyle": "ISO",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "search_path": "pg_catalog",  # pg_dump's '' behaves the same: pg_catalog is always searched first
    "synchronize_seqscans": "off",
    "row_security": "off",
}

# The columns pg_dump puts in each table's COPY (fmtCopyColumnList), with the table's oid.
COLUMNS_SQL = """
SELECT c.oid, n.nspname, c.relname,
       coalesce(array_agg(a.attname ORDER BY a.attnum)
                FILTER (WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), '{}')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
GROUP BY c.oid, n.nspname, c.relname
"""


def session_settings(conn: Any) -> dict[str, str]:
    """The settings both sides use, with the source's encoding and lc_monetary (money's text)."""
    encoding, monetary = conn.execute(
        "SELECT current_setting('server_encoding'), current_setting('lc_monetary')"
    ).fetchone()
    return {**PINNED, "lc_monetary": monetary, "client_encoding": encoding}


def pgoptions(settings: Mapping[str, str], extra: Mapping[str, str] | None = None) -> str:
    """``-c name=value ...`` for libpq's PGOPTIONS (spaces and backslashes escaped)."""
    merged = {k: v for k, v in {**settings, **(extra or {})}.items() if k != "client_encoding"}
    return " ".join(f"-c {k}={_escape(v)}" for k, v in merged.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def dump_env(settings: Mapping[str, str]) -> dict[str, str]:
    """What pg_dump's environment needs so that its COPY text is what a drill recomputes."""
    return {"PGOPTIONS": pgoptions(settings), "PGCLIENTENCODING": settings["client_encoding"]}


def table_columns(conn: Any) -> dict[int, tuple[str, str, list[str]]]:
    """``{oid: (schema, name, columns)}`` of every ordinary table, as pg_dump would copy it."""
    return {int(r[0]): (r[1], r[2], list(r[3])) for r in conn.execute(COLUMNS_SQL).fetchall()}


def copy_sql(schema: str, name: str, columns: list[str]) -> str:
    cols = f" ({', '.join(quote_ident(c) for c in columns)})" if columns else ""
    return f"COPY {qualified(schema, name)}{cols} TO STDOUT"


def digest_table(
    target: PgTarget, schema: str, name: str, columns: list[str], settings: Mapping[str, str]
) -> tuple[int, str]:
    """``(rows, sha256)`` of one table's COPY text, read through psql under ``settings``."""
    psql = pg_tool("psql")
    argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", copy_sql(schema, name, columns)]
    with target.tool_env() as env:
        env["PGOPTIONS"] = pgoptions(settings, PG_DUMP_SETS)
        env["PGCLIENTENCODING"] = settings.get("client_encoding", "UTF8")
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stderr is not None
        hasher, rows = hashlib.sha256(), 0
        while block := proc.stdout.read(1 << 20):
            hasher.update(block)
            rows += block.count(b"\n")
        error = proc.stderr.read().decode("utf-8", "replace").strip()
        if proc.wait() != 0:
            raise ToolError(error.splitlines()[0] if error else f"psql exited with {proc.returncode}")
    return rows, hasher.hexdigest()


def restored_columns(conn: Any, schema: str, name: str) -> list[str]:
    """The column list of a restored table, for manifests that did not record it."""
    for _oid, (s, n, columns) in table_columns(conn).items():
        if (s, n) == (schema, name):
            return columns
    raise ToolError(f"table {schema}.{name} not found")


def digest_tables(
    target: PgTarget, tables: list[tuple[str, str, list[str]]], settings: Mapping[str, str], jobs: int = 2
) -> dict[str, tuple[int, str] | str]:
    """``{"schema.name": (rows, sha256) or an error message}``, ``jobs`` tables at a time."""

    def one(table: tuple[str, str, list[str]]) -> tuple[int, str] | str:
        try:
            return digest_table(target, table[0], table[1], table[2], settings)
        except Exception as exc:
            return f"cannot be read: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, tables))
    return {f"{s}.{n}": r for (s, n, _c), r in zip(tables, results, strict=True)}


def target_of(conn: Any) -> PgTarget:
    """The server and login behind a psycopg connection, for psql (password via a passfile)."""
    info = conn.info
    tls = ("sslmode", "sslcert", "sslkey", "sslrootcert", "connect_timeout")
    params = info.get_parameters()
    return PgTarget(
        options={k: v for k, v in params.items() if k in tls},
        host=info.host,
        port=int(info.port),
        user=info.user,
        dbname=info.dbname,
        password=info.password or None,
    )


def table_digests(
    toc_lines: list[str],
    digests: Mapping[int, Any],
    columns: Mapping[int, tuple[str, str, list[str]]],
    tables: list[tuple[str, str]],
    checksum: bool,
) -> list[Any]:
    """Each dumped table's ``TableStats`` from its data file's digest (``dump_digest.DataDigest``).

    ``toc_lines`` (``pg_restore --list``) map a data file to its table by oid: an entry reads
    ``3358; 0 16399 TABLE DATA public pgbench_accounts postgres`` (dumpId; tableoid oid ...),
    which names with spaces would make ambiguous. Every table of ``tables`` must have one.
    """
    from opsdag.backups.stats import COPY_SHA256, TableStats

    by_table: dict[tuple[str, str], tuple[Any, list[str]]] = {}
    for line in toc_lines:
        if " TABLE DATA " not in line:
            continue
        head, rest = line.split(";", 1)
        dump_id, oid = int(head), int(rest.split()[1])
        if dump_id in digests and oid in columns:
            schema, name, cols = columns[oid]
            by_table[(schema, name)] = (digests[dump_id], cols)
    missing = [f"{s}.{n}" for s, n in tables if (s, n) not in by_table]
    if missing:
        raise ToolError(f"pg_dump wrote no data file for {', '.join(missing)}")
    out = []
    for schema, name in tables:
        digest, cols = by_table[(schema, name)]
        if checksum:
            out.append(TableStats(schema, name, digest.rows, digest.sha256, COPY_SHA256, cols))
        else:
            out.append(TableStats(schema, name, digest.rows))
    return out
