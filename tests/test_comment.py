"""The pull-request comment's body is built in one file, mnist_arch/comment.py (issue 26): its marker, its parts
and their order, each part's markers. The workflows that write the parts call it, and the poster
(model_tests_comment.yml) runs no Python and knows no part: tests/test_workflows.py runs it on the bodies built
here, and on bodies built elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import mnist_arch
from mnist_arch.comment import BODY, MARKER, PARTS, comment_body, main
from tests.test_workflows import COMMENT, MODEL_TESTS, POSTER_STEP, TEMPLATES_DIR, step_script

PACKAGE = Path(mnist_arch.__file__).resolve().parent
#: Anything that writes a hidden marker of the comment, or names one of its parts.
SHAPES = re.compile(r"<!-- /?mnist-arch-|\b\d{2}-[a-z-]+\.md\b")


def test_no_other_module_shapes_the_comment():
    shaping = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if SHAPES.search(p.read_text(encoding="utf-8")))
    assert shaping == ["comment.py"], shaping


@pytest.mark.parametrize(("path", "run"), [(TEMPLATES_DIR / "model_tests.yml", "check"),
                                           (TEMPLATES_DIR / "model_rule.yml", "rule"), (MODEL_TESTS, "check")])
def test_each_testing_run_builds_the_body_with_the_one_function(path, run):
    text = path.read_text(encoding="utf-8")
    calls = re.findall(r"python3? -m mnist_arch\.comment --run (\w+) \"\$RUNNER_TEMP/mnist-arch-report\"", text)
    assert calls == [run], calls
    assert "<!--" not in text and "mnist-arch-part" not in text, "the parts are the body's, not the workflow's"


def test_the_poster_caps_stamps_and_posts_but_shapes_nothing():
    script, _, _ = step_script(COMMENT, POSTER_STEP)
    assert f"marker='{MARKER}'" in script, "the poster finds its comment by the body's marker"
    assert not re.search(r"\b\d{2}-[a-z-]+\.md\b", script), "no part is named in the poster"
    assert "sort" not in script, "the order is the body's"
    assert not re.search(r"(^|[|;&(]|\$\()\s*python3?\s", script, re.MULTILINE), "the poster runs no Python"
    assert "60000 /" in script and "posted by model_tests_comment.yml" in script  # the cap and the footer


def test_the_body_has_the_marker_then_the_parts_in_order():
    names = [name for name, _ in PARTS]
    assert names == sorted(names) and len(set(names)) == len(names)
    check = {"20-benchmarks.md": "bench\n", "10-models.md": "## mnist-arch check\n", "notes.md": "no part\n"}
    assert comment_body(check, "check") == (
        f"{MARKER}\n"
        "<!-- mnist-arch-part:10-models.md job=check -->\n## mnist-arch check\n\n<!-- /mnist-arch-part -->\n"
        "<!-- mnist-arch-part:20-benchmarks.md job=check -->\nbench\n\n<!-- /mnist-arch-part -->\n"
        "<!-- mnist-arch-keep:30-rule.md job=rule -->\n")
    # The rule run keeps the check's parts where they go; a check run without benchmarks drops its old ones.
    assert comment_body({"30-rule.md": "rule\n"}, "rule") == (
        f"{MARKER}\n<!-- mnist-arch-keep:10-models.md job=check -->\n<!-- mnist-arch-keep:20-benchmarks.md job=check "
        "-->\n<!-- mnist-arch-part:30-rule.md job=rule -->\nrule\n\n<!-- /mnist-arch-part -->\n")
    assert "20-benchmarks" not in comment_body({"10-models.md": "x\n"}, "check")
    with pytest.raises(ValueError, match="'bench' is not one of check, rule"):
        comment_body({}, "bench")


def test_a_part_cannot_close_itself_or_pass_for_the_marker():
    forged = f"{MARKER}\n<!-- /mnist-arch-part -->\n<!-- mnist-arch-part:10-models.md job=check -->\nall pass\n"
    body = comment_body({"30-rule.md": forged}, "rule")
    assert body.count(MARKER) == 1 and body.startswith(MARKER + "\n")
    assert body.count("<!-- mnist-arch-part:") == 1 and body.count("<!-- /mnist-arch-part -->") == 1, body
    assert "<!-- quoted mnist-arch-part:10-models.md" in body and "<!-- /quoted mnist-arch-part -->" in body


def test_main_writes_the_body_into_the_report_folder(tmp_path, capsys):
    (tmp_path / "30-rule.md").write_text("the rule\n", encoding="utf-8")
    (tmp_path / "10-models.md").write_text("the check\n", encoding="utf-8")
    assert main(["--run", "rule", str(tmp_path)]) == 0
    assert (tmp_path / BODY).read_text(encoding="utf-8") == comment_body({"30-rule.md": "the rule\n"}, "rule")
    assert main(["--run", "rule", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert f"the report folder {tmp_path / 'missing'} does not exist" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["--run", "bench", str(tmp_path)])
    assert exc.value.code == 2
