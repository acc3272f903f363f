"""A real S3 endpoint over HTTP on loopback (moto's server mode) and an Airflow connection to it.

``moto_server`` is a separate process speaking S3's REST API; opsdag reaches it exactly as
it reaches AWS: ``ObjectStoragePath("s3://bucket/...", conn_id=...)`` -> the amazon
provider's ``S3Hook`` -> s3fs/aiobotocore -> HTTP. Nothing of opsdag is mocked.

- ``s3_server`` (session): the server on a free loopback port, in its own process group
  (stopped with ``killpg`` afterwards), ready when ``GET /moto-api/`` answers (polled with a
  timeout, no fixed sleep). Its log goes to pytest's temp directory.
- ``s3_bucket``: a fresh bucket per test, and ``AIRFLOW_CONN_<ID>`` set for the test (the
  credentials and ``endpoint_url`` in the connection's extra, and nowhere else: the AWS_*
  environment variables and files are cleared). Gives an ``S3Bucket`` with the store URL,
  the connection id and a boto3 client for the test's own look at the objects.

Example::

    def test_x(s3_bucket):
        store = BackupStore(s3_bucket.url("backups"), conn_id=s3_bucket.conn_id)
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.waiting import wait_for

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
CONN_ID = "s3_backups_test"
ACCESS_KEY = "opsdag-test-key"
SECRET_KEY = "opsdag-test-secret"  # moto accepts any pair; these prove the connection is what is used
AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]
    log_file: Path
    recording_file: Path

    def recorded(self, start: bool = True) -> list[tuple[str, str]]:
        """moto's request recorder: ``recorded()`` starts a fresh recording; ``recorded(False)``
        stops it and returns ``(method, bucket/key)`` of every S3 request received since, in order
        (a multi-object delete is given as one ``DELETE`` per key, in the order of its body)."""
        action = "start" if start else "stop"
        if start:
            self.recording_file.write_text("")
        urllib.request.urlopen(
            urllib.request.Request(f"{self.endpoint}/moto-api/recorder/{action}-recording", method="POST"),
            timeout=5,
        ).close()
        if start:
            return []
        out = []
        for line in self.recording_file.read_text().splitlines():
            entry = json.loads(line)
            path, _, query = entry["url"].partition("?")
            path = urllib.parse.unquote(path.split("/", 3)[-1])
            if entry["method"] == "POST" and "delete" in query:  # DeleteObjects: one DELETE per key
                body = base64.b64decode(entry["body"]) if entry["body_encoded"] else entry["body"].encode()
                keys = re.findall(rb"<Key>([^<]*)</Key>", body)
                out += [("DELETE", f"{path.split('/')[0]}/{html.unescape(k.decode())}") for k in keys]
            else:
                out.append((entry["method"], path))
        return out

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {self.process.returncode}: see {self.log_file}")
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def connection_json(endpoint: str, *, with_keys: bool = True) -> str:
    """An ``aws`` connection whose extra carries the keys and the endpoint (``AIRFLOW_CONN_<ID>``)."""
    extra: dict[str, Any] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    if with_keys:
        extra.update(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    return json.dumps({"conn_type": "aws", "extra": extra})


@dataclass
class S3Bucket:
    name: str
    conn_id: str
    endpoint: str
    client: Any

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.name}/{prefix}".rstrip("/")

    def keys(self, prefix: str = "") -> list[str]:
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            found += [obj["Key"] for obj in page.get("Contents", [])]
        return sorted(found)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    if not MOTO_SERVER.exists():
        pytest.skip(f"{MOTO_SERVER} is missing: install requirements.lock (moto[server])")
    port = _free_port()
    home = tmp_path_factory.mktemp("moto")
    log_file, recording_file = home / "moto_server.log", home / "recording.jsonl"
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole by killpg
            env={**os.environ, "MOTO_RECORDER_FILEPATH": str(recording_file)},
        )
    server = S3Server(f"http://127.0.0.1:{port}", process, log_file, recording_file)
    try:
        wait_for(server.ready, timeout=30, what=f"moto_server on port {port}")
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    import boto3

    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/opsdag-test-credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/opsdag-test-config")
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(s3_server.endpoint))
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    name = f"opsdag-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    _forget_cached_file_systems()
    yield S3Bucket(name, CONN_ID, s3_server.endpoint, client)
    _forget_cached_file_systems()


def _forget_cached_file_systems() -> None:
    """Airflow and fsspec cache one file system per connection: a test's connection is its own."""
    try:
        from airflow.sdk.io import store

        store._STORE_CACHE.clear()  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        pass
    from s3fs import S3FileSystem

    S3FileSystem.clear_instance_cache()
