"""Keep docs/ true: find the shell sessions and the included files in the Markdown.

A shell session is a ```console block: lines starting with `$ ` are commands (a trailing `\\`
continues one), the lines after a command up to the next one are its expected output. A line
`...` in the expected output stands for any number of lines.

An included file is a fenced block right after `<!-- include: path/from/repo/root -->`; its
content must be the file's, byte for byte. `devstack docs` rewrites those blocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```(?P<info>[\w+-]*)\s*$")
INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+) -->\s*$")


@dataclass(frozen=True)
class Command:
    doc: Path
    line: int
    command: str
    expected: list[str]


@dataclass(frozen=True)
class Include:
    doc: Path
    line: int
    path: str
    content: str


def _blocks(text: str) -> list[tuple[int, str, list[str], str | None]]:
    """(line of the opening fence, info string, lines, include path) for each fenced block."""
    lines = text.splitlines()
    blocks = []
    i = 0
    pending_include: str | None = None
    while i < len(lines):
        if m := INCLUDE.match(lines[i]):
            pending_include = m["path"]
            i += 1
            continue
        if m := FENCE.match(lines[i]):
            start, body = i, []
            i += 1
            while i < len(lines) and lines[i] != "```":
                body.append(lines[i])
                i += 1
            blocks.append((start + 1, m["info"], body, pending_include))
        elif lines[i].strip():
            pending_include = None
        i += 1
    return blocks


def commands(doc: Path) -> list[Command]:
    found: list[Command] = []
    for line_no, info, body, _ in _blocks(doc.read_text()):
        if info != "console":
            continue
        i = 0
        while i < len(body):
            if not body[i].startswith("$ "):
                i += 1
                continue
            start = i
            cmd = body[i][2:]
            while cmd.endswith("\\") and i + 1 < len(body):
                i += 1
                cmd = cmd + "\n" + body[i]
            i += 1
            expected = []
            while i < len(body) and not body[i].startswith("$ "):
                expected.append(body[i])
                i += 1
            found.append(Command(doc, line_no + 1 + start, cmd, expected))
    return found


def includes(doc: Path) -> list[Include]:
    return [
        Include(doc, line_no, path, "\n".join(body) + "\n")
        for line_no, _, body, path in _blocks(doc.read_text())
        if path is not None
    ]


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Line-by-line equality where an expected `...` line matches any run of lines."""
    if not expected:
        return True
    if expected[0] == "...":
        return any(output_matches(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and output_matches(expected[1:], actual[1:])


def sync_includes(doc: Path, root: Path) -> bool:
    """Rewrite every included block from its file; True when the doc changed."""
    lines = doc.read_text().splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        m = INCLUDE.match(lines[i].rstrip("\n"))
        if m and i + 1 < len(lines) and FENCE.match(lines[i + 1].rstrip("\n")):
            out.append(lines[i + 1])
            i += 2
            while i < len(lines) and lines[i].rstrip("\n") != "```":
                i += 1
            out.append((root / m["path"]).read_text())
            out.append("```\n")
        i += 1
    new = "".join(out)
    changed = new != doc.read_text()
    if changed:
        doc.write_text(new)
    return changed
