"""Every `cohortflow ...` command quoted in docs/*.md and README.md exists, with the options it is given.

Commands are taken from fenced code blocks and inline code spans. Each is walked through the real command
tree (the lazy groups are loaded): every word after `cohortflow` must be a sub-command until a command is
reached, and every `--option` must be one of that command's options. Arguments are not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import typer

from cohortflow.flows.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
STOP = {"#", "|", ">", ">>", "&&", "||", ";", ")", "2>&1"}
GLOBAL = {"--help", "--install-completion", "--show-completion"}


def code_snippets(text: str) -> list[str]:
    """Lines of fenced code blocks and the contents of inline code spans."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            out.append(line)
        else:
            out.extend(re.findall(r"`([^`]+)`", line))
    return out


def commands_in(text: str) -> list[list[str]]:
    """The word lists after each `cohortflow` found in code (up to a comment, pipe, redirection or `)`)."""
    found = []
    for snippet in code_snippets(text):
        for m in re.finditer(r"(?:^|[\s(=`])cohortflow\s+(.*)", snippet):
            words = []
            for w in m.group(1).split():
                if w in STOP or w.startswith("#"):
                    break
                words.append(w.rstrip(";)").strip("\"'"))
            found.append(words)
    return found


def _is_group(cmd: click.Command) -> bool:
    """click groups and typer's groups (which subclass click.Command, not click.Group)."""
    return hasattr(cmd, "list_commands") and hasattr(cmd, "get_command")


def check_command(words: list[str]) -> str | None:
    """None when `cohortflow WORDS` names existing (sub-)commands and options; else what is wrong."""
    cmd: click.Command = typer.main.get_command(app)
    ctx = click.Context(cmd, info_name="cohortflow")
    path = ["cohortflow"]
    skip = False
    for w in words:
        if skip:
            skip = False
            continue
        if w.startswith("-"):
            name = w.split("=", 1)[0]
            if name in GLOBAL:
                skip = name != "--help" and "=" not in w  # the completion options take a shell name
                continue
            opts = {o: p for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
            if name not in opts:
                return f"{' '.join(path)} has no option {name}"
            p = opts[name]
            skip = "=" not in w and not getattr(p, "is_flag", False) and not getattr(p, "count", False)
            continue
        if _is_group(cmd):
            if w.isupper() or w in ("...", "/"):  # a placeholder such as COMMAND
                return None
            sub = cmd.get_command(ctx, w)
            if sub is None:
                return f"{' '.join(path)} has no sub-command {w!r}"
            cmd, ctx = sub, click.Context(sub, info_name=w, parent=ctx)
            path.append(w)
    if _is_group(cmd) and len(path) > 1 and words[-1:] != ["--help"]:
        return f"{' '.join(path)} is a group: name one of its commands"
    return None


def _all_commands() -> list[tuple[str, list[str]]]:
    return [(p.name, words) for p in DOCS for words in commands_in(p.read_text(encoding="utf-8"))]


def test_docs_quote_many_commands():
    found = _all_commands()
    per_file = {name for name, _ in found}
    assert len(found) >= 40, len(found)
    assert {"data-manager.md", "statistician.md", "operations.md"} <= per_file


@pytest.mark.parametrize(("doc", "words"), _all_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_documented_command_exists(doc, words):
    problem = check_command(words)
    assert problem is None, f"{doc}: `cohortflow {' '.join(words)}`: {problem}"


@pytest.mark.parametrize(("words", "problem"), [
    (["ingestt", "inbox/"], "no sub-command 'ingestt'"),
    (["status", "--jsn"], "no option --jsn"),
    (["analysis", "fit", "x.parquet"], "no sub-command 'fit'"),
    (["quarantine", "--release", "4", "--set", "a=1", "--nte", "x"], "no option --nte"),
    (["validation"], "is a group"),
])
def test_checker_catches_made_up_commands(words, problem):
    got = check_command(words)
    assert got is not None and problem in got, got
