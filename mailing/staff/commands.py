"""`mailing staff ...`: the commands for the first admin, recovery and provisioning scripts.

Everyday staff management (invitations, roles, disabling) is on the console's Staff page and
the API; these stay for what needs a shell. A password is prompted, read from stdin or from a
file, never taken as an argument (it would sit in the shell history and the process list).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from mailing.cli_guard import needs_schema as _needs_schema

if TYPE_CHECKING:
    from sqlmodel import Session

    from mailing.models import Staff


@click.group()
def staff() -> None:
    """Manage comms staff."""


@staff.command("create")
@click.argument("email")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["editor", "sender", "admin"]),
    help="what they may do",
)
@click.option("--password", is_flag=True, help="also set a console password (prompted)")
@click.option("--password-stdin", is_flag=True, help="read the console password from stdin")
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False),
    help="read the console password from this file (its first line)",
)
@_needs_schema
def staff_create(
    email: str, role: str, password: bool, password_stdin: bool, password_file: str | None
) -> None:
    """Create a staff member; prints their API token alone on the last line (shown only once).

    With a password (prompted, from stdin or from a file, never an argument) they enrol a second
    factor at their first sign-in: for the first admin. Without one they are emailed a one-time
    link to choose a password and enrol a second factor (valid 72 hours)."""
    from mailing.db import session_scope
    from mailing.staff import invitations
    from mailing.staff import members as staff_members
    from mailing.staff.passwords import WeakPassword
    from mailing.states import StaffRole

    if password + password_stdin + bool(password_file) > 1:
        raise click.UsageError("give at most one of --password, --password-stdin, --password-file")
    secret = None
    if password:
        secret = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    elif password_stdin:
        secret = _first_line(sys.stdin.read())
    elif password_file:
        with open(password_file, encoding="utf-8") as handle:
            secret = _first_line(handle.read())
    notice_id = None
    try:
        with session_scope() as session:
            member, token = staff_members.create_staff(
                session, email, StaffRole(role), password=secret
            )
            if secret is None:
                notice_id = invitations.issue(session, member, invitations.INVITE, None)
    except (staff_members.StaffExists, WeakPassword) as exc:
        click.echo(f"mailing: {exc}", err=True)
        sys.exit(1)
    if notice_id is not None:
        _publish_notice(notice_id)
        click.echo("a one-time set-up link (valid 72 hours) is emailed to them")
    click.echo(f"created staff member {member.id} ({role}); their API token (shown only once):")
    click.echo(token)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text.strip() else ""


def _publish_notice(notice_id: int) -> None:
    """Hand a committed notice to the workers; if the broker is down, the reconciler will."""
    from workers.enqueue import publish_notice

    try:
        publish_notice(notice_id)
    except Exception:  # the row stays in the outbox: the reconciler publishes it later
        click.echo("mailing: the broker did not take the email now; it goes out later", err=True)


@staff.command("password")
@click.argument("email")
@_needs_schema
def staff_password(email: str) -> None:
    """Set a staff member's console password (prompted); unlocks them and ends their sessions."""
    from mailing.db import session_scope
    from mailing.staff import members
    from mailing.staff.passwords import WeakPassword

    secret = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    try:
        with session_scope() as session:
            member = members.find_staff(session, email)
            if member is None:
                raise click.ClickException("no staff member has that address")
            members.set_password(session, member, secret)
    except WeakPassword as exc:
        click.echo(f"mailing: {exc}", err=True)
        sys.exit(1)
    click.echo("password set; any console sessions they had are ended")


def _member_or_exit(session: Session, email: str) -> Staff:
    from mailing.staff import members

    member = members.find_staff(session, email)
    if member is None:
        click.echo("mailing: no staff member has that address", err=True)
        sys.exit(1)
    return member


@staff.command("token")
@click.argument("email")
@click.option(
    "--scope",
    type=click.Choice(["read", "draft", "send"]),
    default="send",
    show_default=True,
    help="what the token may do, within their role",
)
@_needs_schema
def staff_token(email: str, scope: str) -> None:
    """Issue a new API token; prints it alone on the last line. Their old token stops working."""
    from mailing.db import session_scope
    from mailing.staff import apitokens
    from mailing.staff.audit import AuditAction, audit

    with session_scope() as session:
        member = _member_or_exit(session, email)
        if member.disabled_at is not None:
            click.echo("mailing: that staff member is disabled", err=True)
            sys.exit(1)
        token = apitokens.issue_token(session, member, scope)
        expires = apitokens.token_expires_at(member)
        audit(
            session,
            None,
            AuditAction.API_TOKEN_ISSUED,
            detail=f"staff {member.id}, {scope} (command)",
        )
    click.echo(
        f"new {scope} API token, valid until {expires:%d %B %Y}; the old one no longer works:"
    )
    click.echo(token)


@staff.command("reset-2fa")
@click.argument("email")
@_needs_schema
def staff_reset_2fa(email: str) -> None:
    """Clear a staff member's second factors and recovery codes, end their sessions, and email
    them a one-time link (valid 72 hours) to set a password and a new second factor."""
    from mailing.db import session_scope
    from mailing.staff import invitations
    from mailing.staff.audit import AuditAction, audit

    with session_scope() as session:
        member = _member_or_exit(session, email)
        notice_id = invitations.reset_and_issue(session, member, None)
        audit(session, None, AuditAction.TWO_FACTOR_RESET, detail=f"staff {member.id} (command)")
    _publish_notice(notice_id)
    click.echo(
        "second factors cleared and sessions ended; a one-time link to set up a new one "
        "(valid 72 hours) is emailed to them"
    )
