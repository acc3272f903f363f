"""A local Slack incoming webhook: records every message it is sent, answers like Slack.

Slack's webhook takes a JSON ``POST`` at ``https://hooks.slack.com/services/T…/B…/…`` and
answers ``200 ok``. :class:`SlackRecorder` does the same on a free loopback port, in a
thread, and keeps every request (path, headers, JSON body) for the test to read. It can
also answer an error (``respond_with(500, "internal_error")``) or be stopped, which
leaves a dead endpoint (connection refused) behind.

Airflow connection (``conn_type`` ``slackwebhook``): ``SlackWebhookHook`` posts to
``host.rstrip('/') + '/' + password`` when the host carries a scheme, or to the password
alone when it is a full URL (``_build_conn_params`` in the provider's
``hooks/slack_webhook.py``). :meth:`SlackRecorder.connection` gives the first form, the
one Slack's own connections use (host + token). Put its JSON in ``AIRFLOW_CONN_<ID>``:
Airflow reads connections from the environment first, without a metadata database.

Example::

    with SlackRecorder() as slack:
        os.environ["AIRFLOW_CONN_SLACK_TEST"] = slack.connection_json()
        send_slack("slack_test", "hello")
        assert slack.messages[0]["text"] == "hello"
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WEBHOOK_TOKEN = "T000/B000/XXXX"


@dataclass(frozen=True)
class RecordedPost:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the server answered

    @property
    def json(self) -> Any:
        """The body as JSON (None when it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class _Answer:
    status: int = 200
    body: str = "ok"


@dataclass
class SlackRecorder:
    """A recording Slack webhook server on 127.0.0.1 (a free port unless ``port`` is given)."""

    host: str = "127.0.0.1"
    port: int = 0
    token: str = WEBHOOK_TOKEN
    _answer: _Answer = field(default_factory=_Answer, init=False, repr=False)
    _posts: list[RecordedPost] = field(default_factory=list, init=False, repr=False)
    _arrived: threading.Condition = field(default_factory=threading.Condition, init=False, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SlackRecorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                answer = recorder._answer
                recorder._record(
                    RecordedPost(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body, answer.status
                    )
                )
                payload = answer.body.encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads .posts
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="slack-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering; the port is then a dead endpoint (connection refused)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> SlackRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ behaviour

    def respond_with(self, status: int = 200, body: str = "ok") -> None:
        """Answer every following request with ``status`` and ``body`` (e.g. 500, internal_error)."""
        self._answer = _Answer(status, body)

    def reset(self) -> None:
        """Forget what was received and answer 200 ok again."""
        with self._arrived:
            self._posts.clear()
        self._answer = _Answer()

    # ------------------------------------------------------------------ what arrived

    def _record(self, post: RecordedPost) -> None:
        with self._arrived:
            self._posts.append(post)
            self._arrived.notify_all()

    @property
    def posts(self) -> list[RecordedPost]:
        with self._arrived:
            return list(self._posts)

    @property
    def messages(self) -> list[Any]:
        """The JSON bodies received, oldest first."""
        return [p.json for p in self.posts]

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[Any]:
        """Block until ``count`` messages have arrived (for senders in other processes); their bodies."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._posts) >= count, timeout=timeout):
                raise TimeoutError(
                    f"{len(self._posts)} Slack message(s) arrived in {timeout} s, expected {count}"
                )
        return self.messages

    # ------------------------------------------------------------------ Airflow connection

    @property
    def url(self) -> str:
        """The webhook URL the hook posts to."""
        return f"http://{self.host}:{self.port}/{self.token}"

    def connection(self) -> dict[str, Any]:
        """The Airflow connection (slackwebhook) pointing at this server."""
        return {
            "conn_type": "slackwebhook",
            "host": f"http://{self.host}:{self.port}",
            "password": self.token,
        }

    def connection_json(self) -> str:
        """The connection as an ``AIRFLOW_CONN_<ID>`` environment value."""
        return json.dumps(self.connection())


def dead_connection_json(token: str = WEBHOOK_TOKEN) -> str:
    """A slackwebhook connection to a loopback port nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return json.dumps({"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{port}", "password": token})
