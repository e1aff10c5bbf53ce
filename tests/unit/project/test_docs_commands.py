"""Every ``plumbline ...`` command that README.md, docs/ and the Makefile show exists, with the
options shown: each is parsed by the real parser (:func:`plumbline.cli.main.build_parser`).

Commands are taken from fenced code blocks and inline code spans of the Markdown files and from
the Makefile's recipes: a shell command (after an optional ``$`` prompt and ``VAR=value``
assignments) whose program is ``plumbline``, ``<dir>/plumbline`` or ``python -m plumbline``.
Line continuations are joined; a ``#`` comment, a pipe, ``&&``, ``;`` or a redirection ends it.
Placeholders (``VERSION``, ``<version>``, ``KEY=VALUE``, optional ``[...]`` parts) become
values that the option or argument they stand for accepts, so only a wrong subcommand, option
or value fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.paths import REPO

from plumbline.cli.main import build_parser

MARKDOWN = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
MAKEFILE = REPO / "Makefile"

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# VERSION, ID, PATH, F, KEY=VALUE, and <version> / <run id> (one word, see _segments).
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*(?:=[A-Z][A-Z0-9_]*)?|<[^<>]*>)$")


@dataclass(frozen=True)
class Shown:
    """A command as a file shows it: where, the text, and its arguments after ``plumbline``."""

    path: Path
    line: int
    text: str
    args: tuple[str, ...]
    # An inline code span in a sentence may name a command without its required arguments
    # ("`plumbline rollout` reaches the server"); a code block shows one to run.
    mention: bool = False

    def where(self) -> str:
        path = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path
        return f"{path}:{self.line}: `{self.text}`"


def _segments(text: str) -> list[list[str]]:
    """The simple commands of a shell command line, as words: a comment ends the line, a
    separator (``|``, ``&&``, ``;`` ...) the command, a redirection its arguments."""
    # <placeholders> would read as redirections; [optional] parts are the words in them; a
    # descriptor before a redirection (2>&1) is not an argument.
    text = re.sub(
        r"<([^<>]*)>", lambda m: "__angle_" + re.sub(r"\W+", "_", m.group(1)) + "__", text
    )
    text = re.sub(r"(^|\s)\d+(?=[<>])", r"\1", text.replace("[", " ").replace("]", " "))
    pieces: list[str] = [""]
    quote, redirected, i = "", False, 0
    while i < len(text):
        c = text[i]
        if quote or c in "'\"":
            quote = "" if c == quote else quote or c
        elif c == "\\":
            c = text[i : i + 2]
            i += 1
        elif c == "#" and (not pieces[-1] or pieces[-1][-1].isspace()):
            break
        elif c in "|&;":
            pieces.append("")
            redirected = False
            i += 1
            continue
        elif c in "<>":
            redirected = True
        if not redirected:
            pieces[-1] += c
        i += 1
    segments = []
    for piece in pieces:
        try:
            words = shlex.split(piece)
        except ValueError:  # an unclosed quote: prose in a code span, not a command
            continue
        segments.append([re.sub(r"^__angle_(\w*)__$", r"<\1>", w) for w in words])
    return [s for s in segments if s]


def _plumbline_args(words: list[str]) -> tuple[str, ...] | None:
    """The arguments after the ``plumbline`` program of one simple command, else None."""
    words = words[1:] if words[:1] == ["$"] else list(words)
    while words and ASSIGNMENT.match(words[0]):
        words.pop(0)
    if words and Path(words[0]).name.startswith("python") and words[1:3] == ["-m", "plumbline"]:
        words = words[2:]
    if len(words) < 2 or not (words[0] == "plumbline" or words[0].endswith("/bin/plumbline")):
        return None
    if words[1].endswith(":"):
        return None  # the command's output ("plumbline gate: passed ..."), not a command
    return tuple(w for w in words[1:] if w not in ("...", "\u2026"))


def plumbline_calls(text: str) -> list[tuple[str, ...]]:
    """The arguments of every ``plumbline`` call in a shell command line."""
    calls = [_plumbline_args(words) for words in _segments(text)]
    return [c for c in calls if c is not None]


def markdown_commands(path: Path) -> list[Shown]:
    found: list[Shown] = []
    lines = path.read_text().splitlines()
    in_code = False
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        if FENCE.match(line):
            in_code = not in_code
        elif in_code:
            # A continued command: the lines joined, reported at its first line.
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            found += [Shown(path, number, line.strip(), a) for a in plumbline_calls(line)]
        else:
            for span in CODE_SPAN.finditer(line):
                text = span.group(2).strip()
                found += [Shown(path, number, text, a, True) for a in plumbline_calls(text)]
        i += 1
    return found


def makefile_commands(path: Path) -> list[Shown]:
    found: list[Shown] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.startswith("\t"):
            continue
        # $(BIN)/plumbline is the venv's plumbline; the recipe's @, - and + are make's.
        recipe = re.sub(r"\$[({]\w+[)}]/", "", line.strip().lstrip("@-+"))
        found += [Shown(path, number, line.strip(), a) for a in plumbline_calls(recipe)]
    return found


def _value_for(action: argparse.Action | None) -> str:
    """A value that ``action`` accepts, for a placeholder in its place."""
    if action is None:
        return "x"
    if action.choices:
        return str(next(iter(action.choices)))
    if action.type in (int, float):
        return "1"
    return "x"


def _prepare(args: tuple[str, ...], parser: argparse.ArgumentParser) -> tuple[list[str], str]:
    """The arguments with placeholders replaced by values that the option (or positional) in
    their place accepts, and the first option that is not one of its parser's own: argparse
    would take an abbreviation (``--retr``), the docs should not."""
    out: list[str] = []
    current, name = parser, "plumbline"
    positionals = [a for a in parser._actions if not a.option_strings]
    wanting: argparse.Action | None = None  # the option whose value comes next
    unknown = ""
    for arg in args:
        if arg.startswith("-") and len(arg) > 1 and not re.match(r"^-\d", arg):
            flag, eq, value = arg.partition("=")
            option = current._option_string_actions.get(flag)
            if option is None and not unknown:
                unknown = f"{flag} is not an option of `{name}`"
            if eq:
                out.append(f"{flag}={_value_for(option)}" if PLACEHOLDER.match(value) else arg)
                wanting = None
            else:
                out.append(arg)
                wanting = option if option is not None and option.nargs != 0 else None
            continue
        if wanting is not None:
            out.append(_value_for(wanting) if PLACEHOLDER.match(arg) else arg)
            wanting = None
            continue
        action = positionals.pop(0) if positionals else None
        if isinstance(action, argparse._SubParsersAction):
            if arg in action.choices:
                current, name = action.choices[arg], f"plumbline {arg}"
                positionals = [a for a in current._actions if not a.option_strings]
            out.append(arg)
            continue
        out.append(_value_for(action) if PLACEHOLDER.match(arg) else arg)
    return out, unknown


def parse_error(shown: Shown, parser: argparse.ArgumentParser | None = None) -> str | None:
    """What is wrong with the command by the real parser's account, or None."""
    parser = parser or build_parser()
    argv, unknown = _prepare(shown.args, parser)
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            parser.parse_args(argv)
    except SystemExit as stop:
        message = (err.getvalue().strip().splitlines() or [str(stop.code)])[-1]
        named = shown.mention and "the following arguments are required" in message
        if stop.code not in (0, None) and not named:
            return f"{shown.where()}: {message}"
    return f"{shown.where()}: {unknown}" if unknown else None


def all_shown() -> list[Shown]:
    return [c for path in MARKDOWN for c in markdown_commands(path)] + makefile_commands(MAKEFILE)


def test_the_docs_show_plumbline_commands() -> None:
    """Not vacuous: the extraction finds the commands the pages are known to show."""
    shown = all_shown()
    assert len(shown) > 40
    subcommands = {c.args[0] for c in shown if not c.args[0].startswith("-")}
    assert {"serve", "demo", "gate", "promote", "monitor", "rollout"} <= subcommands
    assert any(c.path == MAKEFILE and c.args[:1] == ("serve",) for c in shown)


def test_every_command_shown_in_the_docs_and_the_makefile_parses() -> None:
    parser = build_parser()
    errors = [e for c in all_shown() if (e := parse_error(c, parser)) is not None]
    assert errors == [], "commands the real parser refuses:\n" + "\n".join(errors)


# --- the check itself -------------------------------------------------------------------------


def _one(text: str, tmp_path: Path) -> list[Shown]:
    page = tmp_path / "page.md"
    page.write_text(text)
    return markdown_commands(page)


@pytest.mark.parametrize(
    ("text", "args"),
    [
        ("Run `plumbline gate` first.", ("gate",)),
        (
            "```bash\n$ plumbline report --base REF   # against REF\n```\n",
            ("report", "--base", "REF"),
        ),
        (
            "```\nplumbline replay --rate 30 \\\n  --label-delay 20 | tee x\n```\n",
            ("replay", "--rate", "30", "--label-delay", "20"),
        ),
        (
            "`PLUMBLINE_ROOT=/w plumbline --params p.yaml models > out`",
            ("--params", "p.yaml", "models"),
        ),
        ("`plumbline lineage <version>`", ("lineage", "<version>")),
        (
            "`plumbline demo [--out DIR] [--set KEY=VALUE ...] [--keep]`",
            ("demo", "--out", "DIR", "--set", "KEY=VALUE", "--keep"),
        ),
        ('`plumbline rollback --reason "p99 doubled"`', ("rollback", "--reason", "p99 doubled")),
    ],
)
def test_commands_are_extracted_as_a_shell_would_split_them(
    text: str, args: tuple[str, ...], tmp_path: Path
) -> None:
    assert [c.args for c in _one(text, tmp_path)] == [args]


def test_every_plumbline_call_of_a_command_line_is_read() -> None:
    line = "python -m plumbline gate && plumbline promote | tee log; echo plumbline x > f"
    assert plumbline_calls(line) == [("gate",), ("promote",)]


@pytest.mark.parametrize(
    "text",
    [
        "the `plumbline` command",  # the program alone
        "`plumbline-classifier@champion`",
        "`src/plumbline/cli/main.py`",
        "```yaml\nplumbline: 1\n```\n",
        "a plumbline subcommand (prose, not code)",
    ],
)
def test_prose_and_names_are_not_commands(text: str, tmp_path: Path) -> None:
    assert _one(text, tmp_path) == []


@pytest.mark.parametrize(
    "text",
    [
        "`plumbline report --base REF`",
        "`plumbline lineage <version>`",
        "`plumbline lineage VERSION --json`",
        "`plumbline --params PATH gate --retrain`",
        "`plumbline serve --host 127.0.0.1 --port 8000 --log-level info`",
        "`plumbline rollout canary --fraction 0.2`",
        "`plumbline rollout MODE`",
        "`plumbline replay --rows N --rate 30`",
        "`plumbline demo --set KEY=VALUE --set replay.rate=40 --keep`",
        "`plumbline bootstrap --source DIR`",
        "`plumbline serve --help`",
        "`plumbline rollout` (a command named in a sentence)",
    ],
)
def test_real_commands_with_placeholders_pass(text: str, tmp_path: Path) -> None:
    (shown,) = _one(text, tmp_path)
    assert parse_error(shown) is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("`plumbline gate --retrian`", "unrecognized arguments: --retrian"),
        ("`plumbline promot`", "invalid choice: 'promot'"),
        ("`plumbline serve --port eighty`", "invalid int value: 'eighty'"),
        ("`plumbline serve --host localhost`", "invalid choice: 'localhost'"),
        ("`plumbline rollout sideways`", "invalid choice: 'sideways'"),
        ("`plumbline --param p.yaml gate`", "--param is not an option of `plumbline`"),
        ("`plumbline gate --retr`", "--retr is not an option of `plumbline gate`"),
        ("```\nplumbline replay \\\n  --rate 30 --lable-delay 2\n```\n", "--lable-delay"),
        ("```bash\nplumbline rollout   # no action\n```\n", "required: action"),
    ],
)
def test_a_misspelt_subcommand_option_or_value_is_caught_and_located(
    text: str, why: str, tmp_path: Path
) -> None:
    (shown,) = _one(text, tmp_path)
    error = parse_error(shown)
    assert error is not None and why in error
    line = 2 if text.startswith("```") else 1  # a code block's command: after the fence
    assert error.startswith(f"{tmp_path / 'page.md'}:{line}: `plumbline ")


def test_makefile_recipes_are_read_with_their_plumbline_calls(tmp_path: Path) -> None:
    makefile = tmp_path / "Makefile"
    makefile.write_text(
        "serve: ## the server\n\tplumbline serve --prot 8000\n"
        "run:\n\tdvc repro\n\t$(BIN)/plumbline gate && $(BIN)/python -m plumbline promote\n"
    )
    shown = makefile_commands(makefile)
    assert [(c.line, c.args) for c in shown] == [
        (2, ("serve", "--prot", "8000")),
        (5, ("gate",)),
        (5, ("promote",)),
    ]
    assert "unrecognized arguments: --prot" in (parse_error(shown[0]) or "")
