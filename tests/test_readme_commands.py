"""Every `mailing ...` command and `scripts/...` file the README names exists and parses as
written (issue 26): a renamed command or option fails here, not in a newcomer's terminal."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import click

from mailing.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CODE = re.findall(r"``(.+?)``|`([^`\n]+)`|```sh\n(.*?)```", README, flags=re.S)
SNIPPETS = [line for parts in CODE for text in parts if text for line in text.splitlines()]
COMMANDS = sorted(
    {
        m.group(1).split("#")[0].strip().replace("\\|", "|")
        for s in SNIPPETS
        for m in [re.search(r"(?:^|\s|\.venv/bin/)mailing ([a-z].*)", s)]
        if m
    }
)


def _resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    command: click.Command = main
    while isinstance(command, click.Group) and words and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    return command, words


def test_the_readme_names_the_commands():
    assert any(c.startswith("staff create EMAIL --role editor|sender|admin") for c in COMMANDS)
    assert any(c.startswith("send ID --at") for c in COMMANDS)


def test_every_mailing_command_in_the_readme_exists_and_its_examples_parse():
    for text in COMMANDS:
        words = shlex.split(text)
        command, rest = _resolve(words)
        assert command is not main and not isinstance(command, click.Group), text
        placeholders = any(w.isupper() or w.startswith("[") or "|" in w for w in rest)
        if rest and not placeholders:  # a concrete example: it must parse exactly as written
            command.make_context(f"mailing {words[0]}", list(rest))


def test_every_script_the_readme_names_is_there_and_runnable():
    scripts = set(re.findall(r"scripts/([a-z_]+)", README))
    assert {"dev", "test"} <= scripts
    for name in scripts:
        path = ROOT / "scripts" / name
        assert path.is_file(), name
        assert os.access(path, os.X_OK) or f"bash scripts/{name}" in README, name


def test_a_command_to_copy_is_written_as_it_runs_from_the_clone():
    """In a code block, `mailing` is not on the PATH of a fresh clone: `.venv/bin/mailing` is."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S)
    lines = [line.split("#")[0] for block in blocks for line in block.splitlines()]
    bare = [line for line in lines if re.match(r"\s*mailing ", line)]
    assert bare == []


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_contents_list_names_every_section_and_every_link_reaches_a_heading():
    headings = re.findall(r"^## (.+)$", README, flags=re.M)
    contents = README.split("## Contents", 1)[1].split("\n## ", 1)[0]
    anchors = re.findall(r"\]\(#([^)]+)\)", contents)
    sections = {_slug(h) for h in headings if h != "Contents"}
    assert set(anchors) == sections
    for link in re.findall(r"\]\(((?:tests|bench|docs)/[^)#]+)\)", README):
        assert (ROOT / link).exists(), link
