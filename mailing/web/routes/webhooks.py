"""`POST /webhooks/ses`: Amazon SES bounce, complaint and delivery notifications through SNS.

Anything whose SNS signature does not verify (unsigned, forged, stale, another topic, a
certificate not from SNS, not even JSON) gets 403 and changes nothing. A verified subscription
confirmation is confirmed; a verified notification is applied by the same rules as
`mailing inbound`. A replayed notification changes nothing more (the rules are idempotent).
"""

from __future__ import annotations

import json
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from mailing.deliverability import rules, ses, sns
from mailing.metrics import INBOUND_MESSAGES
from mailing.web.deps import SessionDep
from mailing.web.jsonguard import MAX_JSON_DEPTH, json_too_deep

log = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


async def _raw_body(request: Request) -> bytes:
    # SNS posts JSON as text/plain: read the bytes, whatever the content type says.
    return await request.body()


@router.post("/ses")
def ses_notification(
    body: Annotated[bytes, Depends(_raw_body)], session: SessionDep
) -> JSONResponse:
    # SNS posts as text/plain, which the middleware's depth guard (for JSON bodies) passes by.
    if json_too_deep(body):
        raise HTTPException(422, f"The JSON is nested too deeply: at most {MAX_JSON_DEPTH} levels.")
    try:
        fields = sns.verify(json.loads(body))
    except (ValueError, sns.Rejected) as exc:
        INBOUND_MESSAGES.labels(rules.Outcome.UNSIGNED).inc()
        log.info("ses webhook: refused (%s)", exc if isinstance(exc, sns.Rejected) else "not JSON")
        raise HTTPException(403, "The SNS signature did not verify.") from exc
    except sns.CertificateUnavailable as exc:
        raise HTTPException(503, "The SNS signing certificate could not be fetched.") from exc
    kind = fields["Type"]
    if kind == "SubscriptionConfirmation":
        try:
            sns.confirm_subscription(fields)
        except sns.Rejected as exc:
            raise HTTPException(403, "The subscription URL is not on the SNS host.") from exc
        except sns.CertificateUnavailable as exc:
            raise HTTPException(503, "SNS could not be reached to confirm.") from exc
        log.info("ses webhook: subscription confirmed")
        return JSONResponse({"status": "confirmed"})
    if kind != "Notification":
        return JSONResponse({"status": "ignored"})
    outcome = ses.take(session, fields["Message"])
    session.commit()
    INBOUND_MESSAGES.labels(outcome).inc()
    return JSONResponse({"status": outcome.value})
