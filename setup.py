"""The package index shows README.md, where a relative link ([docs/ci.md](docs/ci.md)) leads nowhere. Everything
else is declared in pyproject.toml; this file only gives setuptools the README with each relative link made
absolute (the file in the repository at this version's tag), and the project URLs, both made from
`mnist_arch.REPOSITORY`, the one place mnist-arch's GitHub owner and name are written.
"""

import re
from pathlib import Path

from setuptools import setup

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


def _setting(name: str) -> str:
    """A string setting of mnist_arch/__init__.py, read without importing the package (and torch)."""
    text = (HERE / "mnist_arch" / "__init__.py").read_text(encoding="utf-8")
    return re.search(rf'^{name} = "([^"]+)"', text, re.MULTILINE)[1]


def version() -> str:
    """mnist_arch.__version__ (the same line setuptools reads)."""
    return _setting("__version__")


def project_urls(repository: str) -> dict[str, str]:
    """[project.urls] of the GitHub repository `repository` (owner/name)."""
    home = f"https://github.com/{repository}"
    return {"Homepage": home, "Documentation": f"{home}#readme", "Source": home, "Issues": f"{home}/issues",
            "Changelog": f"{home}/releases"}


if __name__ == "__main__":
    urls = project_urls(_setting("REPOSITORY"))
    readme = (HERE / "README.md").read_text(encoding="utf-8")
    setup(long_description=absolute_links(readme, urls["Source"], version()),
          long_description_content_type="text/markdown", project_urls=urls)
