"""Handing work to the broker: what the web layer and CLI call, so they never import task bodies."""

from __future__ import annotations

from mailing.subscriptions import EmailToSend

# Fail fast when the broker is down rather than hold a request for minutes.
PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def enqueue_notice(email: EmailToSend) -> None:
    from workers.tasks import send_notice_email

    send_notice_email.apply_async(
        args=(email.notice.value, email.subscriber_id, email.themes, email.frequency.value),
        queue="transactional",
        retry_policy=PUBLISH_RETRY,
    )


def enqueue_erase_link(subscriber_id: int) -> None:
    from workers.tasks import send_erase_link_email

    send_erase_link_email.apply_async(
        args=(subscriber_id,), queue="transactional", retry_policy=PUBLISH_RETRY
    )


def enqueue_update_send(update_id: int) -> None:
    """After start_send committed: a worker enqueues the update's batches."""
    from workers.tasks import start_update_send

    start_update_send.apply_async(args=(update_id,), queue="updates", retry_policy=PUBLISH_RETRY)


def enqueue_update_batch(update_id: int, first_id: int, last_id: int) -> None:
    from workers.tasks import send_update_batch

    send_update_batch.apply_async(
        args=(update_id, first_id, last_id), queue="updates", retry_policy=PUBLISH_RETRY
    )


def enqueue_digest_batch(first_id: int, last_id: int) -> None:
    from workers.tasks import send_digest_batch

    send_digest_batch.apply_async(
        args=(first_id, last_id), queue="updates", retry_policy=PUBLISH_RETRY
    )
