"""Bounce and complaint messages as real servers write them (the shapes only; the addresses are
the test's own)."""

from __future__ import annotations


def dsn(to: str, original_rcpt: str, status: str = "5.1.1", action: str = "failed") -> bytes:
    """An RFC 3464 delivery status notification, as postfix writes one."""
    diagnostic = (
        f"smtp; 550 {status} <{original_rcpt}>: Recipient address rejected: User unknown"
        if status.startswith("5")
        else f"smtp; 451 {status} Mailbox temporarily unavailable"
    )
    return f"""\
Return-Path: <>
From: MAILER-DAEMON@mta.example.net (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mta.example.net.
I'm sorry to have to inform you that your message could not be delivered.

<{original_rcpt}>: host mx.example.net said: {diagnostic[6:]}

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mta.example.net
Arrival-Date: Sun, 29 Nov 2026 12:00:00 +0000

Final-Recipient: rfc822; {original_rcpt}
Original-Recipient: rfc822;{original_rcpt}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.net
Diagnostic-Code: {diagnostic}

--B1
Content-Type: text/rfc822-headers

From: updates@example.org
To: {original_rcpt}
Subject: News

--B1--
""".replace("\n", "\r\n").encode()


def exim_bounce(to: str, original_rcpt: str) -> bytes:
    """A bounce without a DSN part, in Exim's plain-text format (flufl.bounce reads it)."""
    return f"""\
From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: {to}
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: {original_rcpt}
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {original_rcpt}
    SMTP error from remote mail server after RCPT TO:<{original_rcpt}>:
    550 5.1.1 User unknown

------ This is a copy of the message, including all the headers. ------

From: updates@example.org
Subject: News
""".replace("\n", "\r\n").encode()


def arf(to: str, original_rcpt: str, return_path: str, list_unsubscribe: str = "") -> bytes:
    """An RFC 5965 abuse report from a feedback loop, with the original's headers."""
    unsubscribe = f"List-Unsubscribe: {list_unsubscribe}\n" if list_unsubscribe else ""
    return f"""\
From: feedback@fbl.example.net
To: {to}
Subject: FW: News
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F1"

--F1
Content-Type: text/plain; charset=us-ascii

This is an email abuse report for an email message received from IP 192.0.2.1.

--F1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Rcpt-To: <{original_rcpt}>
Arrival-Date: Sun, 29 Nov 2026 12:00:00 +0000

--F1
Content-Type: message/rfc822
Content-Disposition: inline

Return-Path: <{return_path}>
From: updates@example.org
To: {original_rcpt}
Subject: News
{unsubscribe}
Hello.

--F1--
""".replace("\n", "\r\n").encode()


def auto_reply(to: str) -> bytes:
    return f"""\
From: someone@example.net
To: {to}
Subject: Out of office
Auto-Submitted: auto-replied

I am away until Monday.
""".replace("\n", "\r\n").encode()
