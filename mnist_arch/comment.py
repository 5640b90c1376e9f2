"""The pull-request comment's body, built here and nowhere else: the hidden marker by which
model_tests_comment.yml finds its comment, then the report's parts in their order, each between hidden markers
that name it and the run that wrote it.

Two workflows write parts: a run of model_tests.yml (`check`: the check and diff tables, the benchmark
comparison) and a run of model_rule.yml (`rule`: the accuracy rule). Each writes its parts into its report
folder, then builds the body from them (`python -m mnist_arch.comment --run check|rule FOLDER` writes
FOLDER/comment.md); where the other workflow's part goes, a keep marker asks the poster to keep that part of
the comment as it is, so that a rule run leaves the check's tables in place and the next push keeps the rule.
model_tests_comment.yml runs no Python: it checks the body, keeps what it is asked to keep, cuts each part to its
share of GitHub's limit, adds the footer (which run wrote each part) and posts (docs/ci.md). No torch here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

#: The hidden marker by which model_tests_comment.yml finds its own comment: the body's first line.
MARKER = "<!-- mnist-arch-report -->"
#: The comment's parts in order: the file its run writes into the report folder, and that run (check:
#: model_tests.yml, rule: model_rule.yml). 10-models.md: `mnist-arch check` and, on pull requests, `mnist-arch
#: diff` (Markdown); 20-benchmarks.md: pytest-benchmark's comparison with the base branch's last run (where there
#: is one); 30-rule.md: the accuracy rule of each model that declares one (mnist_arch.chart).
PARTS = (("10-models.md", "check"), ("20-benchmarks.md", "check"), ("30-rule.md", "rule"))
RUNS = ("check", "rule")
#: The body's file in the report folder, which model_tests_comment.yml posts.
BODY = "comment.md"


def _quoted(text: str) -> str:
    """`text` with every hidden marker of ours made inert, so that a part can neither close itself, nor open
    another part, nor pass for the comment's marker."""
    return text.replace("<!-- mnist-arch-", "<!-- quoted mnist-arch-").replace("<!-- /mnist-arch-",
                                                                              "<!-- /quoted mnist-arch-")


def comment_body(parts: Mapping[str, str], run: str) -> str:
    """The pull-request comment's body from the parts that `run` (one of RUNS) wrote, file name -> Markdown:
    MARKER, then each part of PARTS in order. This run's own, quoted, between `<!-- mnist-arch-part:NAME
    job=RUN -->` and `<!-- /mnist-arch-part -->` (nothing where the run wrote none: a part of the last run that
    this one did not write goes with it); the other run's, a line `<!-- mnist-arch-keep:NAME job=RUN -->` where
    the poster keeps that part of the comment. A file that PARTS does not name is no part of the comment."""
    if run not in RUNS:
        raise ValueError(f"run {run!r} is not one of {', '.join(RUNS)}")
    lines = [MARKER]
    for name, owner in PARTS:
        if owner != run:
            lines.append(f"<!-- mnist-arch-keep:{name} job={owner} -->")
        elif name in parts:
            lines += [f"<!-- mnist-arch-part:{name} job={owner} -->", _quoted(parts[name]), "<!-- /mnist-arch-part -->"]
    return "\n".join(lines) + "\n"


def write_body(folder: str | Path, run: str) -> Path:
    """Build the body from the parts `run` wrote into `folder` and write it there as BODY; its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"the report folder {folder} does not exist: the report steps write it first")
    parts = {name: (folder / name).read_text(encoding="utf-8", errors="replace")
             for name, owner in PARTS if owner == run and (folder / name).is_file()}
    body = folder / BODY
    body.write_text(comment_body(parts, run), encoding="utf-8")
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnist_arch.comment",
                                     description="Build the pull-request comment's body from the parts a run wrote "
                                                 f"into FOLDER, as FOLDER/{BODY}.")
    parser.add_argument("--run", required=True, choices=RUNS, help="the run whose parts FOLDER holds")
    parser.add_argument("folder", metavar="FOLDER")
    args = parser.parse_args(argv)
    try:
        write_body(args.folder, args.run)
    except OSError as exc:
        print(f"python -m mnist_arch.comment: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
