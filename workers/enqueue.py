"""Handing work to the broker: what the web layer and CLI call, so they never import task bodies."""

from __future__ import annotations

from mailing.subscriptions import EmailToSend

# Fail fast when the broker is down rather than hold a request for minutes.
PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def enqueue_notice(email: EmailToSend) -> None:
    from workers.tasks import send_notice_email

    send_notice_email.apply_async(
        args=(email.notice.value, email.subscriber_id, email.themes),
        queue="transactional",
        retry_policy=PUBLISH_RETRY,
    )
