"""Structured JSON logs, one event a line, with the request id; addresses and tokens redacted.

Code logs ids, not addresses; the filter is the safety net for anything that slips through
(an exception message, a library's log line, a URL with a token in it).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from mailing.subscribers.tokens import LINK_PATHS

ADDRESS = re.compile(
    r"[^\s<>\"'(),;:@/]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}|[^\s<>\"'(),;:@/]+%40[A-Za-z0-9.-]+"
)
TOKEN_PATH = re.compile(
    "/(" + "|".join(re.escape(p.strip("/")) for p in LINK_PATHS.values()) + r")/[A-Za-z0-9._-]+"
)


# Signed link tokens (itsdangerous: base64 JSON `eyJ…`, or `.`-prefixed when compressed),
# bearer tokens, and secrets passed as query or form fields.
SIGNED_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])\.?eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]+)+")
BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
SECRET_FIELD = re.compile(r"(?i)\b((?:csrf_)?token|password|session|secret[a-z_]*)=([^\s&;\"',]+)")


def redact(text: str) -> str:
    text = ADDRESS.sub("<address>", text)
    text = TOKEN_PATH.sub(r"/\1/<token>", text)
    text = SIGNED_TOKEN.sub("<token>", text)
    text = BEARER.sub(r"\1<token>", text)
    return SECRET_FIELD.sub(r"\1=<redacted>", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if record.exc_info:
            clean += "\n" + redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = clean, ()
        return True


# Structured fields a log call may pass with `extra=`; they hold no personal data.
EXTRA_FIELDS = ("method", "route", "status", "duration_ms")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from mailing.web.middleware import request_id

        event = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        for key in EXTRA_FIELDS:
            if hasattr(record, key):
                event[key] = getattr(record, key)
        return json.dumps(event, ensure_ascii=False)


def setup(level: int = logging.INFO, *, json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings become JSON events too
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    for noisy in ("mail.log", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
