"""Images in updates: uploaded by staff (API and console), checked and re-encoded without
metadata, stored by the service and served from one URL for everyone; shown in the preview,
the email, the archive and the feed, with the alt text in the plain-text part. Any other image,
and any hostile file, is refused with a 422 naming it."""

from __future__ import annotations

import io
import re
import struct
import zlib
from email import message_from_bytes, policy

import pytest
from PIL import Image

from mailing.config import get_settings
from tests.conftest import drain_worker
from tests.staff.test_console import csrf_of, signed_in_client
from tests.support.helpers import count
from tests.support.sending import add_subscribers, start, wait_sent
from tests.support.sending import api_staff as make_staff

MINDS = "healthy-minds"
ALT = "A map of London's boroughs"


def png(width=40, height=30, *, secret: str = "") -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if secret:
        info.add_text("Comment", secret)
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (64, 48), (10, 120, 200))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPS
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 30000) -> bytes:
    """A tiny file that claims side x side pixels: a decompression bomb."""
    rows = zlib.compress(b"\x00" * (side // 8 + 1) * 64, 9)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", rows)
        + _chunk(b"IEND", b"")
    )


@pytest.fixture
def editor(database):
    return {"Authorization": f"Bearer {make_staff('editor')}"}


def upload(client, headers, data: bytes, name="picture.png", ctype="image/png"):
    return client.post("/admin/images", headers=headers, files={"file": (name, data, ctype)})


def test_an_upload_is_re_encoded_without_metadata_and_served_from_one_url(client, editor):
    answer = upload(client, editor, png(secret="home address 1 Acacia Avenue"))
    assert answer.status_code == 201, answer.text
    image = answer.json()
    assert re.fullmatch(r"/images/[A-Za-z0-9_-]+\.png", image["url"])
    assert (image["width"], image["height"]) == (40, 30)

    served = client.get(image["url"])
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    assert "max-age=31536000" in served.headers["cache-control"]
    assert "public" in served.headers["cache-control"]
    assert b"Acacia" not in served.content and b"Comment" not in served.content
    assert Image.open(io.BytesIO(served.content)).size == (40, 30)
    # One URL for everyone: the same bytes whoever asks, no cookie, nothing per reader.
    assert "set-cookie" not in served.headers
    assert client.get(image["url"]).content == served.content
    assert client.get(image["url"].replace(".png", ".jpg")).status_code == 404


def test_a_photo_loses_its_exif_and_location(client, editor):
    answer = upload(client, editor, jpeg_with_gps(), "photo.jpg", "image/jpeg")
    assert answer.status_code == 201, answer.text
    served = client.get(answer.json()["url"]).content
    assert b"SecretCam" not in served and b"Exif" not in served
    assert not Image.open(io.BytesIO(served)).getexif()


HOSTILE = {
    "text with an image name": (b"hello, not an image at all", "image.png"),
    "an svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "x.png"),
    "a bmp": (None, "x.png"),
    "a decompression bomb": (png_bomb(), "bomb.png"),
    "huge dimensions": (png(4001, 10), "wide.png"),
    "truncated": (png(300, 300)[:-200], "cut.png"),
    "empty": (b"", "empty.png"),
    "over 5 MB": (b"\x89PNG\r\n\x1a\n" + b"\x00" * (5 * 1024 * 1024), "big.png"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_file_is_refused_with_422_and_nothing_stored(client, editor, case):
    data, name = HOSTILE[case]
    if data is None:
        out = io.BytesIO()
        Image.new("RGB", (8, 8)).save(out, "BMP")
        data = out.getvalue()
    answer = upload(client, editor, data, name)
    assert answer.status_code == 422, (case, answer.status_code, answer.text[:200])
    assert "file" in answer.json()["detail"]
    assert count("stored_image") == 0


def test_upload_needs_a_staff_token(client, database):
    assert upload(client, {}, png()).status_code == 401
    assert upload(client, {"Authorization": "Bearer forged"}, png()).status_code == 401
    assert count("stored_image") == 0


def _draft(client, headers, body):
    return client.post(
        "/admin/updates",
        headers=headers,
        json={"subject": "Pictures", "body": body, "themes": [MINDS]},
    )


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("![A chart](https://tracker.example/pixel.gif)", "https://tracker.example/pixel.gif"),
        ("![A chart](chart.png)", '"chart.png"'),
        ("![A chart](/images/NoSuchImage1.png)", "/images/NoSuchImage1.png"),
    ],
)
def test_an_image_that_cannot_be_shown_is_refused_naming_it(client, editor, body, named):
    answer = _draft(client, editor, f"Hello.\n\n{body}")
    assert answer.status_code == 422
    assert named in answer.json()["detail"][0]["msg"]
    assert count("theme_update") == 0


def test_an_image_needs_alt_text_unless_marked_decorative(client, editor):
    url = upload(client, editor, png()).json()["url"]
    refused = _draft(client, editor, f"![]({url})")
    assert refused.status_code == 422 and "alt text" in refused.text
    assert _draft(client, editor, f'Hello.\n\n![]({url} "decorative")').status_code == 201


def test_the_image_shows_in_the_email_archive_and_feed_on_the_defaults(prod, smtp, worker):
    editor = {"Authorization": f"Bearer {make_staff('sender')}"}
    url = upload(prod, editor, png()).json()["url"]
    absolute = get_settings().base_url + url
    created = _draft(prod, editor, f"Look at this.\n\n![{ALT}]({url})\n\nThanks.")
    assert created.status_code == 201, created.text
    update_id = created.json()["id"]

    preview = prod.get(f"/admin/updates/{update_id}/preview", headers=editor).json()
    assert f'<img src="{absolute}" alt="{ALT.replace(chr(39), "&#39;")}"' in preview["html"]

    add_subscribers(1, [MINDS])
    start(update_id)
    wait_sent(update_id)
    drain_worker()
    [mail] = smtp.outbox.wait_for(1)
    message = message_from_bytes(mail.raw, policy=policy.default)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert f'src="{absolute}"' in html
    assert f"[Image: {ALT}]" in text and "/images/" not in text

    page = prod.get(f"/updates/{update_id}")
    assert page.status_code == 200 and f'src="{absolute}"' in page.text
    feed = prod.get("/updates.atom")
    assert f"src=&#34;{absolute}&#34;" in feed.text or f"src=&quot;{absolute}&quot;" in feed.text
    assert prod.get(url).status_code == 200


def test_the_console_uploads_an_image_and_shows_its_markdown(client, session):
    signed_in_client(client, session)
    page = client.get("/admin/images")
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.text
    answer = client.post(
        "/admin/images/upload",
        data={"csrf_token": csrf_of(page.text)},
        files={"file": ("p.png", png(), "image/png")},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    shown = client.get(answer.headers["location"])
    assert re.search(r"!\[Describe the image here\]\(/images/[A-Za-z0-9_-]+\.png\)", shown.text)
    bad = client.post(
        "/admin/images/upload",
        data={"csrf_token": csrf_of(page.text)},
        files={"file": ("p.png", b"not an image", "image/png")},
    )
    assert bad.status_code == 422 and "not an image we can read" in bad.text
    assert count("stored_image") == 1


def test_a_link_to_an_image_is_absolute_in_the_email(database):
    from mailing.updates.markdown import render_html, render_text

    base = get_settings().base_url
    body = "[The chart](/images/abcdefgh12.png)"
    assert f'href="{base}/images/abcdefgh12.png"' in str(render_html(body))
    assert f"({base}/images/abcdefgh12.png)" in render_text(body)
