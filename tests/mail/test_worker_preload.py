"""`mailing worker` compiles the email templates before its pool forks, so no pool process
compiles them when its first send starts (and a template that cannot compile stops the worker
at its start rather than a send)."""

from __future__ import annotations

from mailing import cli
from mailing.rendering import environment


def test_the_worker_parent_compiles_every_email_template_before_the_pool_forks():
    env = environment()
    emails = env.list_templates(filter_func=lambda n: n.startswith("emails/"))
    assert emails
    env.cache.clear()  # type: ignore[union-attr]
    cli._before_the_pool_forks()
    cached = {key[1] for key in env.cache}  # type: ignore[union-attr]
    assert set(emails) <= cached
