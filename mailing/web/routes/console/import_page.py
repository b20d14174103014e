"""The list import in the console (admins): upload a CSV, see a dry run's counts and invalid
lines, then import it (mailing/subscribers/imports.py does both, exactly as `mailing import` does).

The upload waits in var/imports/ under a random name between the preview and the import, and
is deleted after the import or within UPLOAD_HOURS; files over 20 MiB are for `mailing import`.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlmodel import Session
from starlette.datastructures import UploadFile

from mailing.db import get_engine
from mailing.staff.sessions import SignedIn, csrf_ok
from mailing.states import StaffRole
from mailing.subscribers import imports
from mailing.web.deps import SessionDep
from mailing.web.routes.console.common import (
    Interrupt,
    Who,
    console_page,
    console_router,
    need,
)

log = logging.getLogger(__name__)
router = console_router()
UPLOADS = Path("var") / "imports"
UPLOAD_HOURS = 1
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def _page(who: SignedIn, status_code: int = 200, **context: Any) -> Response:
    context.setdefault("errors", {})
    return console_page("import", who, status_code=status_code, nav="import", **context)


def _forget_old_uploads() -> None:
    cutoff = time.time() - UPLOAD_HOURS * 3600
    for old in UPLOADS.glob("*.csv"):
        if old.stat().st_mtime < cutoff:
            old.unlink(missing_ok=True)


@router.get("/import")
def import_page(who: Who) -> Response:
    need(who, StaffRole.ADMIN)
    _forget_old_uploads()
    return _page(who)


def _publish(notice_ids: list[int]) -> None:
    from workers.enqueue import publish_notices

    try:
        publish_notices(notice_ids, queue="updates")
    except Exception as exc:  # the outbox keeps them: the reconciler publishes them
        log.warning("import: could not publish notices (%s)", type(exc).__name__)


@router.post("/import")
async def import_post(request: Request, who: Who, session: SessionDep) -> Response:
    need(who, StaffRole.ADMIN)
    form = await request.form()
    if not csrf_ok(who, form.get("csrf_token")):
        raise Interrupt(console_page("csrf", who, status_code=403))
    source = str(form.get("source") or "")
    upload = form.get("file")
    UPLOADS.mkdir(parents=True, exist_ok=True)
    if isinstance(upload, UploadFile):
        upload_id = secrets.token_hex(16)
        path = UPLOADS / f"{upload_id}.csv"
        path.write_bytes(await upload.read())
        return _run(who, session, path, upload_id, source, dry_run=True)
    upload_id = str(form.get("upload") or "")
    path = UPLOADS / f"{upload_id}.csv"
    if not UPLOAD_ID.match(upload_id) or not path.exists():
        return _page(who, 422, errors={"file": "Choose the file again: the upload has expired."})
    return _run(who, session, path, upload_id, source, dry_run=False)


def _run(
    who: SignedIn, session: Session, path: Path, upload_id: str, source: str, *, dry_run: bool
) -> Response:
    try:
        report = imports.run(
            lambda: Session(get_engine(), expire_on_commit=False),
            path,
            source,
            dry_run=dry_run,
            publish=_publish,
            staff_id=who.staff.id,
        )
    except imports.ImportRefused as exc:
        path.unlink(missing_ok=True)
        return _page(who, 422, errors={"file": f"{exc}; nothing was imported."})
    if not dry_run:
        path.unlink(missing_ok=True)
    return _page(
        who,
        report=report,
        counts=report.counts.as_dict(),
        upload=upload_id if dry_run else None,
        source=source,
        dry_run=dry_run,
    )
