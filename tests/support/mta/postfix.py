"""Debian's postfix, run from a private configuration directory as the relay the service sends
through: no systemd, no /etc/postfix/main.cf, its own queue, listening on a loopback port.

It relays everything to the test's mailbox server (`relayhost`), except mail for the bounce
domain, which goes to `mailing inbound` (`transport_maps`). So postfix itself writes the bounce
(DSN) for a recipient the mailbox server refuses and delivers it to the return path. Queue runs
and retries are made to happen within seconds (`queue_run_delay`, `minimal_backoff_time`), and
deferred mail becomes a bounce after `bounce_queue_lifetime` (set short here).

Postfix must run as root (it drops to its `postfix` user). Tests skip when it is missing, except
in CI (CI=true), where a missing postfix is a failure: .ci/run installs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailing.mail.devcapture import _free_port
from tests.support.sending import wait_until

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.test
mydomain = mta.test
myorigin = mta.test
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
relayhost = [127.0.0.1]:{mailbox_port}
transport_maps = inline:{{ {bounce_domain}=smtp:[127.0.0.1]:{inbound_port} }}
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtp_dns_support_level = disabled
biff = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
maximal_queue_lifetime = {lifetime}
bounce_queue_lifetime = {lifetime}
smtp_connect_timeout = 5s
"""


def require_postfix() -> None:
    """Skip without postfix (or without root to run it), but fail in CI, which must have it."""
    missing = None
    if not Path(POSTFIX).exists():
        missing = "Debian's postfix is not installed (apt-get install postfix)"
    elif os.geteuid() != 0:
        missing = "postfix must be started as root"
    if missing is None:
        return
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"{missing}: .ci/run must provide it", pytrace=False)
    pytest.skip(missing)


class Postfix:
    """`with Postfix(mailbox_port, inbound_port, "bounce.test") as mta:` sends go to mta.port."""

    def __init__(
        self, mailbox_port: int, inbound_port: int, bounce_domain: str, lifetime: str = "10s"
    ) -> None:
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mailing-postfix-"))
        self.config = self.root / "etc"
        self.config.mkdir()
        (self.config / "main.cf").write_text(
            MAIN_CF.format(
                root=self.root,
                mailbox_port=mailbox_port,
                inbound_port=inbound_port,
                bounce_domain=bounce_domain,
                lifetime=lifetime,
            )
        )
        (self.config / "master.cf").write_text(MASTER_CF.format(port=self.port))
        # postfix wants its queue directory root-owned and closed to others; `postfix check`
        # makes its subdirectories, owned by its own user.
        os.chmod(self.root, 0o755)
        (self.root / "queue").mkdir(mode=0o755)
        (self.root / "data").mkdir(mode=0o700)
        shutil.chown(self.root / "data", "postfix")

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def __enter__(self) -> Postfix:
        checked = self._postfix("check")
        started = self._postfix("start") if checked.returncode == 0 else checked
        if started.returncode != 0:
            why = f"{started.stdout.strip()} {started.stderr.strip()} {self.log()[-2000:]}"
            shutil.rmtree(self.root, ignore_errors=True)
            raise RuntimeError(f"postfix did not start: {why}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"postfix is not listening on {self.port}: {self.log()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        self._postfix("stop")
        # `postfix stop` returns before master has gone: wait until `status` says it has.
        deadline = time.monotonic() + 30
        while self._postfix("status").returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `check` with a deadline; on failure the assertion carries postfix's own log."""
        try:
            wait_until(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- postfix log ---\n{self.log()[-4000:]}") from None
