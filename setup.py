"""The package index shows README.md, where a relative link ([docs/ci.md](docs/ci.md)) leads nowhere. Everything
else is declared in pyproject.toml; this file only gives setuptools the README with each relative link made
absolute: the file in the repository (`Source` in [project.urls]) at this version's tag.
"""

import re
import sys
from pathlib import Path

from setuptools import setup

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
LINK = re.compile(r"(\]\()([^)\s]+)(\))")  # [text](target) and ![alt](target)
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # https:, mailto:


def absolute_links(markdown: str, source: str, version: str) -> str:
    """`markdown` with every relative link target made a link into the repository at tag v`version`."""
    base = f"{source.rstrip('/')}/blob/v{version}/"

    def absolute(match: re.Match) -> str:
        target = match[2]
        if SCHEME.match(target):
            return match[0]
        return f"{match[1]}{base}{'README.md' if target.startswith('#') else ''}{target}{match[3]}"

    return LINK.sub(absolute, markdown)


def version() -> str:
    """mnist_arch.__version__, read without importing the package (the same line setuptools reads)."""
    text = (HERE / "mnist_arch" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)[1]


if __name__ == "__main__":
    project = tomllib.loads((HERE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    readme = (HERE / "README.md").read_text(encoding="utf-8")
    setup(long_description=absolute_links(readme, project["urls"]["Source"], version()),
          long_description_content_type="text/markdown")
