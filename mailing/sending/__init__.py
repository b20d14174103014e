"""Sending updates. Who receives one (recipients.py), staff control over a send: start,
schedule, pause, resume, cancel (control.py), the batches that hand mail to the relay
(batch.py), one read model of progress (progress.py), and the reconciler that re-drives lost
work (reconcile.py).

The database is the truth: a delivery row per recipient says what is left to send, and the
broker only says "there is work". At most one commit chunk per killed worker process is sent
twice; nothing is ever lost.
"""

from mailing.figures.progress import Progress, progress
from mailing.sending.batch import (
    BatchOutcome,
    abandon,
    backoff_seconds,
    deliver_batch,
    finish_if_done,
)
from mailing.sending.control import (
    ContentChanged,
    Publish,
    SendRequest,
    Started,
    WrongState,
    batch_tasks,
    cancel,
    pause,
    request_send,
    resume,
    schedule,
    start_due,
    start_send,
    unschedule,
)
from mailing.sending.recipients import count_recipients
from mailing.sending.reconcile import Reconciled, reconcile

__all__ = [
    "BatchOutcome",
    "ContentChanged",
    "Progress",
    "Publish",
    "Reconciled",
    "SendRequest",
    "Started",
    "WrongState",
    "abandon",
    "backoff_seconds",
    "batch_tasks",
    "cancel",
    "count_recipients",
    "deliver_batch",
    "finish_if_done",
    "pause",
    "progress",
    "reconcile",
    "request_send",
    "resume",
    "schedule",
    "start_due",
    "start_send",
    "unschedule",
]
