"""Send a Slack message through an Airflow Slack webhook connection, never failing the caller.

A release, backup or drill must not change its outcome because Slack is down or not
configured: every failure is logged and reported as ``False``. The webhook URL lives in
the connection's password (or host + password), so it never appears in a spec or log.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def send_slack(
    conn_id: str | None,
    text: str,
    *,
    blocks: list[dict[str, Any]] | None = None,
    channel: str | None = None,
    timeout: int = 5,
) -> bool:
    """Post ``text`` (and Block Kit ``blocks``) to the webhook of ``conn_id``; True when Slack took it."""
    if not conn_id:
        log.info("Slack notification skipped: no Slack connection configured")
        return False
    try:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        # slack_sdk logs the whole webhook URL (its token included) when it retries.
        logging.getLogger("slack_sdk").setLevel(logging.WARNING)

        hook = SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=timeout)
        hook.send(text=text, blocks=blocks, channel=channel)
    except Exception as exc:  # any failure of a notification is logged, never raised
        log.warning("Slack notification not sent through %r: %s: %s", conn_id, type(exc).__name__, exc)
        return False
    return True
