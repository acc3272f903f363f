"""The sandbox's PostgreSQL: one ``PostgresServer`` in the state directory, with a ``demo`` database.

The server is the generic ``postgres.PostgresServer``; what makes it the sandbox's is
here: where it lives (``<sandbox>/postgres``) and the small shop schema of the ``demo``
database that backups and drills of ``include/databases/`` work on.
"""

from __future__ import annotations

from opsdag.dev.sandbox.postgres import PostgresServer
from opsdag.dev.sandbox.state import Layout

DEMO_DATABASE = "demo"

DEMO_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS products (
    id serial PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    title text NOT NULL,
    price_cents integer NOT NULL CHECK (price_cents >= 0)
);
CREATE TABLE IF NOT EXISTS orders (
    id serial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers(id),
    product_id integer NOT NULL REFERENCES products(id),
    quantity integer NOT NULL CHECK (quantity > 0),
    ordered_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (name, email)
SELECT 'Customer ' || i, 'customer' || i || '@example.test' FROM generate_series(1, 50) AS i
ON CONFLICT (email) DO NOTHING;
INSERT INTO products (sku, title, price_cents)
SELECT 'SKU-' || lpad(i::text, 4, '0'), 'Product ' || i, 100 * i + 99 FROM generate_series(1, 20) AS i
ON CONFLICT (sku) DO NOTHING;
INSERT INTO orders (customer_id, product_id, quantity, ordered_at)
SELECT 1 + (i * 7) % 50, 1 + (i * 3) % 20, 1 + i % 5, timestamptz '2025-01-01' + i * interval '1 hour'
FROM generate_series(1, 200) AS i
WHERE NOT EXISTS (SELECT 1 FROM orders);
"""


def postgres_server(layout: Layout) -> PostgresServer:
    """The sandbox's server (started or not); it archives WAL when demo-db's spec says so."""
    from opsdag.backups.pg_server import server_user
    from opsdag.dev.sandbox.wal_archiving import archive_settings

    return PostgresServer(
        layout.postgres_dir, superuser="postgres", settings=archive_settings(layout, server_user())
    )


def create_demo_database(server: PostgresServer) -> None:
    """The ``demo`` database with its tables and rows, and the marker table (idempotent)."""
    from opsdag.dev.sandbox.marker_writer import SCHEMA as MARKER_SCHEMA

    server.create_database(DEMO_DATABASE)
    server.psql(DEMO_SCHEMA + MARKER_SCHEMA, dbname=DEMO_DATABASE)
