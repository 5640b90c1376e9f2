"""The [tool.mnist-arch] table `mnist-arch init` writes into pyproject.toml, byte for byte: the table's text (a
model, its budgets, its quick tier and its rule), the file read as it is, an old table taken out safely (for
--force), the new one appended in the file's own line ending, and what will be written verified to parse back to
what was asked."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from itertools import takewhile
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from mnist_arch.errors import MnistArchError

TABLE = ("tool", "mnist-arch")
_HEADER = re.compile(r"\s*\[\[?(?P<key>[^\]]*)\]\]?\s*(#.*)?")


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):  # an inline table; keys are ours (bare)
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def table_text(name: str, declared: dict[str, Any], train: dict[str, Any], comment: str | None = None,
                rule: dict[str, Any] | None = None) -> str:
    lines = [
        "[tool.mnist-arch]",
        "# Models judged by `mnist-arch check`, `diff`, `bench` and by pytest (one item per declared fact).",
        '# data = "data"  # optional: the folder holding MNIST/raw/ for the training items',
        "",
        f"[tool.mnist-arch.models.{name}]",
        *(f"{key} = {_toml_value(value)}" for key, value in declared.items()),
    ]
    if train:
        lines += ["", f"[tool.mnist-arch.models.{name}.train]", *([comment] if comment else []),
                  *(f"{key} = {_toml_value(value)}" for key, value in train.items())]
    if rule:
        lines += ["", f"[tool.mnist-arch.models.{name}.rule]",
                  f"# The course's rule: {rule['threshold']:.2%} test accuracy held for {rule['consecutive']} "
                  f"epoch(s) in a row within {rule['epochs']}",
                  f"# (`mnist-arch train {name} --tier rule`, `pytest -m rule`, model_rule.yml). The",
                  "# recipe below is a usual course one (SGD with momentum, OneCycle, 7-degree rotation), a starting",
                  "# point that mnist-arch has not tuned for your model: write your notebook's own here.",
                  *(f"{key} = {_toml_value(value)}" for key, value in rule.items())]
    return "\n".join(lines) + "\n"


def read_pyproject(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise MnistArchError(f"{path} cannot be read as UTF-8 text: {exc}.") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MnistArchError(f"{path} is not valid TOML ({exc}); fix it, then run mnist-arch init again.") from None


def lookup(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _is_ours(header_key: str) -> bool:
    key = re.sub(r"[\s\"']", "", header_key)
    return key == "tool.mnist-arch" or key.startswith("tool.mnist-arch.")


def without_table(text: str, data: dict[str, Any], path: Path) -> str:
    """`text` less the [tool.mnist-arch] and [tool.mnist-arch.*] sections (each from its header to the next
    header that is not ours), verified: everything else must parse exactly as before."""
    kept: list[str] = []
    section: list[str] | None = None  # the lines of our sections being dropped, None outside them
    for line in text.splitlines(keepends=True):
        header = _HEADER.fullmatch(line.rstrip("\r\n"))
        if header and _is_ours(header["key"]):
            section = (section or []) + [line]
        elif section is not None and not header:
            section.append(line)
        else:
            if section:  # leaving our sections: the comment lines right above this header are its own
                comments = list(takewhile(lambda x: x.lstrip().startswith("#"), reversed(section)))
                kept += comments[::-1]
                section = None
            kept.append(line)
    result = "".join(kept)
    expected = json.loads(json.dumps(data, default=str))
    del expected["tool"]["mnist-arch"]
    if not expected["tool"]:
        del expected["tool"]
    try:
        same = json.loads(json.dumps(tomllib.loads(result), default=str)) == expected
    except tomllib.TOMLDecodeError:
        same = False
    if not same:
        raise MnistArchError(f"{path} declares [tool.mnist-arch] in a form that mnist-arch init cannot replace "
                             "safely (for example dotted keys under [tool]); remove that table by hand and run "
                             "mnist-arch init again. Nothing was written.")
    return result


def appended(old: str, table: str) -> str:
    """`old` unchanged, then `table` after a blank line, in the file's own line ending."""
    newline = "\r\n" if "\r\n" in old else "\n"
    table = table.replace("\n", newline)
    if not old:
        return table
    if not old.endswith("\n"):
        old += newline
    if not old.endswith(2 * newline) and old.strip():
        old += newline
    return old + table


def verify(text: str, name: str, declared: dict[str, Any], train: dict[str, Any], path: Path,
            rule: dict[str, Any] | None = None) -> None:
    """What will be written parses, and its table says what was asked (a guard on the TOML written here)."""
    try:
        table = lookup(tomllib.loads(text), TABLE)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - a bug here, not bad input
        raise AssertionError(f"init would write invalid TOML to {path}: {exc}") from None
    expected = {**declared, **({"train": train} if train else {}), **({"rule": rule} if rule else {})}
    assert table["models"][name] == expected, (table, expected)

