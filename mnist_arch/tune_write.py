"""`mnist-arch tune --write`: the best recipe put into the model's rule table in pyproject.toml, the searched
fields' lines replaced where the first of them stood and every other byte of the file as it was (comments,
order, line ends); the new file is parsed again and compared before it is written (docs/tune.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mnist_arch.errors import MnistArchError
from mnist_arch.tune_report import render_table, table_lines
from mnist_arch.tune_space import SEARCHED

_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*[.=]""")
_HEADER = re.compile(r"^\s*\[")


def _rule_header(name: str) -> re.Pattern:
    quoted = rf"(?:{re.escape(name)}|\"{re.escape(name)}\"|'{re.escape(name)}')"
    return re.compile(rf"^\s*\[\s*tool\s*\.\s*(?:mnist-arch|\"mnist-arch\"|'mnist-arch')\s*\.\s*models\s*\.\s*"
                      rf"{quoted}\s*\.\s*rule\s*\]\s*(#.*)?$")


def _depth(line: str) -> int:
    """Brackets a line opens and does not close (outside strings and comments): a multi-line array."""
    depth, quote = 0, ""
    for ch in line:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return depth


def write_rule(path: Path, name: str, fields: Mapping[str, Any]) -> str:
    """Put the searched fields of `fields` into the model's rule table in `path` (the table's other lines, and
    every other byte of the file, as they were; a new table at the end where there is none). The new text."""
    text = path.read_bytes().decode("utf-8")  # bytes: line ends as they are (read_text would make them \n)
    lines = text.splitlines(keepends=True)
    header = _rule_header(name)
    start = next((i for i, line in enumerate(lines) if header.match(line.rstrip("\r\n"))), None)
    eol = "\r\n" if start is not None and lines[start].endswith("\r\n") else "\n"  # the file's own line ends
    new = [line + eol for line in table_lines({k: v for k, v in fields.items() if k in SEARCHED})]
    if start is None:
        sep = "" if not text or text.endswith("\n") else "\n"
        result = text + sep + "\n" + render_table(name, fields) + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines))
                    if _HEADER.match(lines[i]) and _depth_before(lines, start, i) == 0), len(lines))
        body, kept, at, depth, dropping = lines[start + 1:end], [], None, 0, False
        for line in body:
            if depth == 0:
                match = _KEY.match(line)
                dropping = bool(match) and match.group(1).strip("\"'") in SEARCHED
                if dropping and at is None:
                    at = len(kept)
            depth += _depth(line)
            if not dropping:
                kept.append(line)
        if at is None:  # after the table's last line that is not blank
            at = max((i + 1 for i, line in enumerate(kept) if line.strip()), default=0)
            if kept and at > 0 and not kept[at - 1].endswith("\n"):
                kept[at - 1] += eol
        kept[at:at] = new
        result = "".join(lines[:start + 1] + kept + lines[end:])
    _check_written(path, text, result, name, fields)
    path.write_bytes(result.encode("utf-8"))
    return result


def _depth_before(lines: list[str], start: int, i: int) -> int:
    return sum(_depth(line) for line in lines[start + 1:i])


def _check_written(path: Path, old: str, new: str, name: str, fields: Mapping[str, Any]) -> None:
    """The new file parses, its rule table is the old one's fields but the searched ones, plus `fields`' searched
    ones (all of `fields` for a new table), and nothing else changed: else nothing is written."""
    from mnist_arch.project import tomllib

    def split(text: str) -> tuple[dict, dict | None]:
        data = tomllib.loads(text)
        model = data.get("tool", {}).get("mnist-arch", {}).get("models", {}).get(name, {})
        return data, model.pop("rule", None) if isinstance(model, dict) else None

    before, old_rule = split(old)
    try:
        after, new_rule = split(new)
    except tomllib.TOMLDecodeError as exc:
        after, new_rule = {"error": str(exc)}, None
    if old_rule is None:
        expected = dict(fields)
    else:
        expected = {**{k: v for k, v in old_rule.items() if k not in SEARCHED},
                    **{k: v for k, v in fields.items() if k in SEARCHED}}
    if after != before or new_rule != expected:
        raise MnistArchError(f"{path}: the rule table of {name} is written in a form --write does not edit safely "
                             "(a sub-table or a dotted key of a searched field, say), so nothing was written. Paste "
                             "the table printed above over it instead.")

