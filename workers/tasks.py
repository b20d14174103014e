"""Celery tasks: each one unit of work, arguments are ids and slugs, the rules live in mailing/."""

from __future__ import annotations

import logging

from celery import Task

from mailing.db import session_scope
from mailing.mailer import TransientFailure
from mailing.subscriptions import EmailToSend, Notice, send_notice
from workers.celery_app import app

log = logging.getLogger(__name__)


@app.task(
    bind=True,
    autoretry_for=(TransientFailure,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=12,
)
def send_notice_email(self: Task, notice: str, subscriber_id: int, themes: list[str]) -> bool:
    with session_scope() as session:
        sent = send_notice(session, EmailToSend(Notice(notice), subscriber_id, themes))
    log.info(
        "notice %s for subscriber %s: %s", notice, subscriber_id, "sent" if sent else "skipped"
    )
    return sent
