"""Images in updates: GET /images/{key}.{ext} (public, one URL for everyone), POST /admin/images
(the staff API, multipart) and the console's Images page (/admin/images, /admin/images/upload)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlmodel import Session, col, select
from starlette.datastructures import UploadFile

from mailing.models import StoredImage
from mailing.staff.sessions import csrf_ok
from mailing.states import StaffRole
from mailing.updates import images
from mailing.web.deps import SessionDep
from mailing.web.routes.admin_api import Editor
from mailing.web.routes.console.common import Who, console_page, console_router, need

router = APIRouter(tags=["images"])
console = console_router()

# An image never changes under its URL (a new upload gets a new key): cache it for a year.
CACHE_FOREVER = "public, max-age=31536000, immutable"


@router.get("/images/{name}", include_in_schema=False)
def image(name: str, session: SessionDep) -> Response:
    stored = images.stored_at(session, f"/images/{name}")
    if stored is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    return Response(
        stored.data, media_type=stored.content_type, headers={"Cache-Control": CACHE_FOREVER}
    )


async def _upload(request: Request) -> tuple[bytes | None, Any]:
    """The posted `file` (None when there is none) and the form itself."""
    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception:  # a malformed multipart body is the sender's mistake
        return None, {}
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return None, form
    return await upload.read(images.MAX_BYTES + 1), form


def _described(stored: StoredImage) -> dict[str, Any]:
    path = images.path_of(stored)
    return {
        "id": stored.id,
        "url": path,
        "width": stored.width,
        "height": stored.height,
        "content_type": stored.content_type,
        "markdown": f"![Describe the image here]({path})",
    }


@router.post(
    "/admin/images",
    status_code=201,
    responses={201: {"description": "Stored"}, 401: {}, 403: {}, 422: {}},
)
async def upload_image(request: Request, who: Editor, session: SessionDep) -> Response:
    """Upload an image (multipart field `file`): checked, re-encoded, stored; its URL returned."""
    raw, _ = await _upload(request)
    try:
        stored = images.store(session, who.id, raw or b"")
    except images.BadImage as bad:
        return JSONResponse({"detail": bad.errors}, status_code=422)
    session.commit()
    return JSONResponse(_described(stored), status_code=201)


def _images_page(session: Session, who: Any, status: int = 200, **context: Any) -> Response:
    recent = session.exec(select(StoredImage).order_by(col(StoredImage.id).desc()).limit(50)).all()
    return console_page(
        "images",
        who,
        status_code=status,
        images=[_described(i) for i in recent],
        nav="images",
        **context,
    )


@console.get("/images")
def images_page(who: Who, session: SessionDep, uploaded: str = "") -> Response:
    need(who, StaffRole.EDITOR)
    return _images_page(session, who, uploaded=uploaded if images.PATH.match(uploaded) else "")


@console.post("/images/upload")
async def upload_from_console(request: Request, who: Who, session: SessionDep) -> Response:
    raw, form = await _upload(request)
    if not csrf_ok(who, form.get("csrf_token") if form else None):
        return console_page("csrf", who, status_code=403)
    need(who, StaffRole.EDITOR)
    try:
        stored = images.store(session, who.staff.id, raw or b"")
    except images.BadImage as bad:
        return _images_page(session, who, 422, errors=bad.errors)
    session.commit()
    return RedirectResponse(f"/admin/images?uploaded={images.path_of(stored)}", status_code=303)
