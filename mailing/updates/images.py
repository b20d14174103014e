"""Images in updates: staff upload one, we check and re-encode it, and serve it to everyone from
one URL. Markdown names it as ![alt text](/images/KEY.ext); any other image is refused.

Re-encoding with Pillow drops every piece of metadata (EXIF, GPS, comments, colour-profile text)
and anything hidden after the picture. A file is refused (422) if it is not really one of the
four formats, is over the byte or pixel limits, is a decompression bomb, or is truncated.
"""

from __future__ import annotations

import io
import re
import secrets
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from sqlmodel import Session, select

from mailing.errors import Invalid
from mailing.models import StoredImage

MAX_BYTES = 5 * 1024 * 1024
MAX_SIDE = 4000  # pixels, each way
MAX_PIXELS = 16_000_000
# What we accept -> what we store (GIF is stored as PNG: one frame, lossless).
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WEBP", "GIF": "PNG"}
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
PATH = re.compile(r"^/images/([A-Za-z0-9_-]{8,32})\.(png|jpg|webp)$")


class BadImage(Invalid):
    def __init__(self, message: str) -> None:
        super().__init__({"file": message})


@dataclass(frozen=True)
class Cleaned:
    data: bytes
    content_type: str
    width: int
    height: int


def clean(raw: bytes) -> Cleaned:
    """Check an uploaded file and re-encode it without metadata; raises BadImage."""
    if not raw:
        raise BadImage("Choose an image file to upload.")
    if len(raw) > MAX_BYTES:
        raise BadImage(f"An image can be at most {MAX_BYTES // (1024 * 1024)} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as image:
                kind = image.format or ""
                if kind not in FORMATS:
                    raise BadImage("Upload a PNG, JPEG, WebP or GIF image.")
                width, height = image.size
                if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
                    raise BadImage(
                        f"An image can be at most {MAX_SIDE} x {MAX_SIDE} pixels "
                        f"(this one is {width} x {height})."
                    )
                image.load()  # decodes every pixel: a truncated file fails here
                out = _reencode(image, FORMATS[kind])
    except BadImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(
            "This file is not an image we can read: upload a PNG, JPEG, WebP or GIF."
        ) from None
    except (OSError, ValueError, SyntaxError):
        raise BadImage(
            "This image is damaged or incomplete: export it again and upload it."
        ) from None
    return Cleaned(out, CONTENT_TYPES[FORMATS[kind]], width, height)


def _reencode(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "JPEG":
        image.convert("RGB").save(buffer, "JPEG", quality=85, optimize=True)
    elif kind == "WEBP":
        image.convert("RGBA" if "A" in image.getbands() else "RGB").save(buffer, "WEBP", quality=85)
    else:
        frame = image if image.mode in ("RGB", "RGBA", "L", "LA") else image.convert("RGBA")
        frame.save(buffer, "PNG", optimize=True)  # no info= given: no text chunks, no EXIF
    return buffer.getvalue()


def store(session: Session, staff_id: int | None, raw: bytes) -> StoredImage:
    """Clean and store an upload; the caller commits. Raises BadImage."""
    cleaned = clean(raw)
    image = StoredImage(
        key=secrets.token_urlsafe(12),
        content_type=cleaned.content_type,
        width=cleaned.width,
        height=cleaned.height,
        data=cleaned.data,
        uploaded_by=staff_id,
    )
    session.add(image)
    session.flush()
    return image


def path_of(image: StoredImage) -> str:
    return f"/images/{image.key}.{EXTENSIONS[image.content_type]}"


def find(session: Session, key: str) -> StoredImage | None:
    return session.exec(select(StoredImage).where(StoredImage.key == key)).first()


def stored_at(session: Session, path: str) -> StoredImage | None:
    """The image served at `path` (/images/KEY.ext), if there is one."""
    found = PATH.match(path)
    stored = find(session, found.group(1)) if found else None
    return stored if stored is not None and path_of(stored) == path else None
