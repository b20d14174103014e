"""The code keeps the shape the README describes: no import cycles among mailing/ and workers/
modules (function-level imports count too), no module over 400 lines, ruff and mypy --strict
clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mailing", "workers")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in ROOT.joinpath(package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor if is_package else anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                # The longest project module the target names (a module, or a name in one).
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    graph = import_graph()
    # A package's __init__ re-exports its modules; they must not import it back.
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


MAX_TOP_MODULES = 15
# What may stay flat at the top of mailing/: infrastructure only. The domain lives in packages
# (subscribers/, mail/, sending/, updates/, staff/, deliverability/, figures/, web/).
INFRASTRUCTURE = {
    "__init__",
    "cli",
    "clock",
    "config",
    "db",
    "errors",
    "cli_guard",
    "logs",
    "metrics",
    "migrate",
    "ratelimit",
    "rendering",
    "states",
    "themes",
}


def test_only_infrastructure_is_flat_at_the_top_of_mailing() -> None:
    top = {p.stem for p in ROOT.joinpath("mailing").glob("*.py")}
    assert len(top) <= MAX_TOP_MODULES, sorted(top)
    assert top <= INFRASTRUCTURE, sorted(top - INFRASTRUCTURE)


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in _modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed in this environment")
    return found


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [_tool("ruff"), "check", "mailing", "workers", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    result = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]


# --- The one way out (mailing/mail/) ----------------------------------------------------------

MAIL = "mailing.mail"
# Building a MIME message to send: the email package's message classes and its generators (a
# parsed message, email.message.Message, is reading mail, not building it).
BUILDS_MIME = {
    "EmailMessage",
    "MIMEMultipart",
    "MIMEText",
    "MIMEBase",
    "Generator",
    "BytesGenerator",
}


def _trees() -> dict[str, ast.AST]:
    return {name: ast.parse(path.read_text(), str(path)) for name, path in _modules().items()}


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return found


def hands_mail_to_the_relay(tree: ast.AST) -> bool:
    """Calls a relay connection's send or send_many (`x.send_many(...)`, or `x.send(...)` /
    `x.sendmail(...)` on something named a mailer or an smtp connection), other than a relay
    calling its own methods."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value).lower()
            if owner == "self":
                continue
            if node.func.attr == "send_many" or (
                node.func.attr in {"send", "sendmail", "send_message"}
                and ("mailer" in owner or "smtp" in owner)
            ):
                return True
    return False


def builds_mime(tree: ast.AST) -> bool:
    if any(i.startswith("email.mime") or i == "email.generator" for i in _imports(tree)):
        return True
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in BUILDS_MIME:
                return True
    return False


def test_exactly_one_module_hands_mail_to_smtp() -> None:
    trees = _trees()
    # The relay alone talks SMTP; the pipeline alone hands it mail.
    assert sorted(n for n, tree in trees.items() if "smtplib" in _imports(tree)) == [
        f"{MAIL}.relay"
    ]
    callers = sorted(
        n for n, tree in trees.items() if n != f"{MAIL}.relay" and hands_mail_to_the_relay(tree)
    )
    assert callers == [f"{MAIL}.pipeline"]


def test_nothing_outside_mail_builds_a_mime_message() -> None:
    builders = sorted(
        n for n, tree in _trees().items() if not n.startswith(MAIL) and builds_mime(tree)
    )
    assert builders == []
    assert builds_mime(_trees()[f"{MAIL}.builder"])


def test_the_mail_rules_catch_a_stray_sender() -> None:
    stray = ast.parse(
        "import smtplib\n"
        "from email.message import EmailMessage\n"
        "def f(mailer, smtp):\n"
        "    EmailMessage()\n"
        "    mailer.send('a', 'b', b'c')\n"
    )
    assert hands_mail_to_the_relay(stray) and builds_mime(stray)
    assert "smtplib" in _imports(stray)
    assert hands_mail_to_the_relay(ast.parse("def f(smtp):\n    smtp.sendmail('a', 'b', 'c')\n"))
    assert not hands_mail_to_the_relay(ast.parse("def f(task):\n    task.send(1)\n"))
    assert not builds_mime(ast.parse("from email.message import Message\nMessage\n"))


def test_no_digest_sending_module() -> None:
    assert "mailing.digest_sending" not in _modules()
