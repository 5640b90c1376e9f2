"""The rule run's chart (a Mermaid `xychart-beta` block) and its Markdown (mnist_arch/chart.py).

The text is tested here in Python, and every chart is also parsed by Mermaid itself (the npm `mermaid`
package, in a DOM from `jsdom`, through tests/mermaid_parse.mjs): what Mermaid reads back (title, x labels,
y range, each line's values) must be what was meant, and a chart broken on purpose must fail to parse, so a
parser that accepts everything is noticed. Those tests skip with the reason where node or the packages are
missing; .ci/run installs them (`npm install mermaid jsdom` into a cache outside the clone), or point
MNIST_ARCH_MERMAID_MODULES at a node_modules folder that holds both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_arch.chart import MAX_NAME, MAX_POINTS, accuracy_chart, main, rule_markdown, safe_label

PARSER = Path(__file__).with_name("mermaid_parse.mjs")
#: What no title may contain: it would end Mermaid's quoted string, start an entity code, a statement,
#: a directive, HTML, or end the Markdown fence around the block.
BREAKERS = set('"#;[]{}<>`%\n\r\t\\')
HOSTILE = ['net"] evil', "a`b```c", "x;\ny", "#quot; %%{init: {}}%%", "<img src=x>", "ünï¢ødé", "n" * 500, ""]


def block(text: str) -> str:
    """The diagram inside the one ```mermaid fence of `text` (a chart, or Markdown around one)."""
    assert text.count("```mermaid\n") == 1, text
    inside = text.partition("```mermaid\n")[2]
    assert "\n```\n" in "\n" + inside, f"the fence is closed on a line of its own: {text}"
    diagram = ("\n" + inside).partition("\n```\n")[0].strip("\n")
    assert "`" not in diagram, "nothing inside may close the fence"
    return diagram


def statement(text: str, keyword: str) -> str:
    found = [line.strip() for line in block(text).splitlines() if line.strip().startswith(keyword)]
    assert len(found) == 1, (keyword, text)
    return found[0]


def numbers(line: str) -> list[float]:
    return [float(x) for x in re.search(r"\[(.*)\]", line)[1].split(",")]


def lines_of(text: str) -> list[list[float]]:
    return [numbers(line) for line in block(text).splitlines() if line.strip().startswith("line ")]


def title_of(text: str) -> str:
    return re.fullmatch(r'title "([^"]*)"', statement(text, "title"))[1]


def y_range(text: str) -> tuple[float, float]:
    low, high = re.search(r"(\S+) --> (\S+)$", statement(text, "y-axis")).groups()
    return float(low), float(high)


def x_labels(text: str) -> list[str]:
    return re.findall(r'"([^"]*)"', statement(text, "x-axis").partition("[")[2])


# --------------------------------------------------------------------------- the text, in Python


@pytest.mark.parametrize("n", [1, 2, 15, MAX_POINTS])
def test_one_point_per_epoch_and_a_flat_threshold(n):
    accuracies = [0.9 + 0.099 * i / n for i in range(n)]
    text = accuracy_chart(accuracies, 0.994, "net")
    assert x_labels(text) == [str(e) for e in range(1, n + 1)]
    accuracy, threshold = lines_of(text)
    assert accuracy == pytest.approx([100 * a for a in accuracies], abs=0.005)
    assert threshold == [99.4] * n
    low, high = y_range(text)
    assert 0 <= low < min(accuracy) and max(accuracy + threshold) < high <= 100
    assert title_of(text) == "net: test accuracy per epoch, threshold 99.40%"


def test_the_y_axis_is_bounded_and_fits_the_values():
    assert y_range(accuracy_chart([0.991, 0.9935, 0.9952], 0.994)) == (98, 100)  # whole points, room above
    assert y_range(accuracy_chart([0.0, 0.098], 0.994)) == (0, 100)  # a collapse: the whole scale
    assert y_range(accuracy_chart([1.0, 1.0], 1.0)) == (99, 100)  # never above 100
    assert y_range(accuracy_chart([0.0], None)) == (0, 1)  # never below 0
    assert y_range(accuracy_chart([None, float("nan")], None)) == (0, 100)  # nothing known


def test_missing_and_nan_epochs_are_drawn_at_the_foot_and_labelled():
    text = accuracy_chart([0.98, None, float("nan"), float("inf"), 1.5, -0.1, "x", True, 0.995], 0.994)
    assert x_labels(text) == ["1", "2 n/a", "3 n/a", "4 n/a", "5 n/a", "6 n/a", "7 n/a", "8 n/a", "9"]
    accuracy, _ = lines_of(text)
    low, _ = y_range(text)
    assert accuracy == [98, *[low] * 7, 99.5]
    assert not re.search(r"nan|inf", block(text), re.IGNORECASE)


def test_first_epoch_and_the_last_points_of_a_long_run():
    assert x_labels(accuracy_chart([0.99, 0.995], 0.994, first_epoch=4)) == ["4", "5"]
    text = accuracy_chart([0.99] * (MAX_POINTS + 20), 0.994, "net")
    assert len(x_labels(text)) == MAX_POINTS and x_labels(text)[0] == "21"
    assert all(len(line) == MAX_POINTS for line in lines_of(text))
    assert title_of(text).endswith(f"(epochs 21-{MAX_POINTS + 20})")


def test_no_threshold_no_second_line_and_no_epochs_still_a_chart():
    text = accuracy_chart([0.97, 0.98])
    assert len(lines_of(text)) == 1 and "threshold" not in title_of(text)
    empty = accuracy_chart([], 0.994)
    assert statement(empty, "x-axis") == 'x-axis "epoch" ["-"]'
    assert [len(line) for line in lines_of(empty)] == [1, 1], "one point each: Mermaid needs data"


@pytest.mark.parametrize("name", HOSTILE)
def test_names_cannot_break_the_chart(name):
    text = accuracy_chart([0.99, 0.995], 0.994, name)
    title = title_of(text)
    assert not BREAKERS & set(safe_label(name)), title
    assert title in (f"{safe_label(name)}: test accuracy per epoch, threshold 99.40%",
                     "test accuracy per epoch, threshold 99.40%")
    assert len(safe_label(name)) <= MAX_NAME
    assert len(title) <= MAX_NAME + len(": test accuracy per epoch, threshold 99.40%")
    assert block(text).count("\n") == 6, "one statement a line: a newline in a name starts none"


def test_safe_label_keeps_ordinary_names():
    assert safe_label("bn_dropout-cnn.v2 (7,900 params)") == "bn_dropout-cnn.v2 (7,900 params)"
    assert safe_label("a  \t b") == "a b"
    assert safe_label("x" * 100) == "x" * (MAX_NAME - 3) + "..."


# --------------------------------------------------------------------------- parsed by Mermaid itself


def _modules() -> Path:
    """The node_modules folder that holds mermaid and jsdom, or pytest.skip with what to install."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: Mermaid's own parser runs on it (apt-get install nodejs npm)")
    folder = os.environ.get("MNIST_ARCH_MERMAID_MODULES")
    if folder and all((Path(folder) / pkg / "package.json").is_file() for pkg in ("mermaid", "jsdom")):
        return Path(folder)
    pytest.skip("the npm packages mermaid and jsdom are not installed: `npm install --prefix DIR mermaid jsdom`, "
                "then MNIST_ARCH_MERMAID_MODULES=DIR/node_modules (.ci/run does this)")


def mermaid_read(texts: list[str]) -> list[dict]:
    """What Mermaid reads from each diagram (one node process for all of them)."""
    proc = subprocess.run(["node", str(PARSER), str(_modules())], input=json.dumps(texts), capture_output=True,
                          text=True, timeout=120, check=False)
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


CASES = {
    "one epoch": ([0.9942], 0.994, "net"),
    "fifteen epochs": ([0.94 + i * 0.0037 for i in range(15)], 0.994, "bn_dropout_cnn"),
    "missing and nan": ([0.97, None, float("nan"), 0.995, 0.996], 0.994, "net"),
    "no threshold": ([0.97, 0.98], None, "net"),
    "no epochs": ([], 0.994, "net"),
    "nothing known": ([None, None], None, ""),
    "collapse": ([0.098, 0.1135, 0.098], 0.994, "net"),
    "perfect": ([1.0, 1.0, 1.0], 1.0, "net"),
    "long": ([0.99] * (MAX_POINTS + 5), 0.994, "net"),
    **{f"hostile name {i}": ([0.99, 0.995], 0.994, name) for i, name in enumerate(HOSTILE)},
}


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict]:
    texts = {case: accuracy_chart(*args) for case, args in CASES.items()}
    return dict(zip(texts, mermaid_read([block(t) for t in texts.values()]), strict=True))


@pytest.mark.parametrize("case", sorted(CASES))
def test_mermaid_reads_what_was_meant(parsed, case):
    result = parsed[case]
    assert result["ok"] and result["type"] == "xychart", result
    text = accuracy_chart(*CASES[case])
    assert result["title"] == title_of(text)
    labels = x_labels(text)
    assert result["categories"] == labels
    assert result["y"] == list(y_range(text))
    assert [p["type"] for p in result["plots"]] == ["line"] * len(lines_of(text))
    for plot, expected in zip(result["plots"], lines_of(text), strict=True):
        assert plot["values"] == expected and len(plot["values"]) == len(labels)
    assert result["palette"] == "#2563eb, #dc2626", "the init directive was read: accuracy blue, threshold red"


def test_mermaid_rejects_a_chart_broken_on_purpose():
    # The same chart with the name left as it was: a quote ends the title and the rest is not grammar.
    good = block(accuracy_chart([0.99, 0.995], 0.994, "net"))
    broken = good.replace('title "net', 'title "net"] evil')
    assert broken != good
    first, second = mermaid_read([good, broken])
    assert first["ok"], first
    assert not second["ok"] and "Parse error" in second["error"], second


# --------------------------------------------------------------------------- the Markdown of a rule run


def rule_run(accuracies: list[float], passed: bool, **extra) -> dict:
    """What `mnist-arch train NAME --tier rule --format json` writes for one seed (runs.TrainResult.to_dict)."""
    history = [{"epoch": i, "train_loss": 0.5 - i / 100, "train_accuracy": a - 0.01, "test_loss": 0.05,
                "test_accuracy": a, "lr": 0.01, "seconds": 30.0} for i, a in enumerate(accuracies, 1)]
    return {"model": "net", "recipe": "rule", "epochs": len(history), "seconds": 30.0 * len(history),
            "test_accuracy": accuracies[-1], "history": history, "collapsed": None, "threads": 2, "device": "cpu",
            "precision": "fp32", "setting": "fp32", "min_accuracy": 0.994, "passed": passed,
            "rule": {"threshold": 0.994, "epochs": 15, "consecutive": 3}, **extra}


def table_rows(markdown: str) -> list[list[str]]:
    rows = [line for line in markdown.splitlines() if re.match(r"\| \d", line)]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_rule_markdown_held_reached_once_then_lost_and_never():
    held = rule_markdown(rule_run([0.99, 0.9941, 0.9945, 0.995], True, reason="passed: epochs 2-4"))
    assert held.startswith("### `net`: the accuracy rule, ✅ pass\n")
    assert "99.40% test accuracy on the 10,000 test images, held for 3 epochs in a row within 15 epochs" in held
    assert "The trainer's verdict: passed: epochs 2-4." in held
    assert [row[2] for row in table_rows(held)] == ["❌", "✅", "✅", "✅"]
    assert [row[1] for row in table_rows(held)] == ["99.00%", "99.41%", "99.45%", "99.50%"]
    assert "Longest run of epochs at or above the threshold: epochs 2-4 (3)" in held
    assert lines_of(held)[0] == [99, 99.41, 99.45, 99.5]

    lost = rule_markdown(rule_run([0.99, 0.9945, 0.993, 0.992], False))
    assert "❌ fail" in lost and [row[2] for row in table_rows(lost)] == ["❌", "✅", "❌", "❌"]
    assert "at or above the threshold: epoch 2 (1)" in lost

    never = rule_markdown(rule_run([0.98, 0.99], False))
    assert "at or above the threshold: none (0)" in never


def test_rule_markdown_nan_loss_and_collapse():
    run = rule_run([0.98, 0.098], False, collapsed={"class": 1, "share": 0.9995})
    run["history"][1]["train_loss"] = float("nan")
    text = rule_markdown(json.loads(json.dumps(run)))  # through JSON, as the job reads it
    assert "Collapsed: 99.95% of the test predictions are class 1" in text
    assert table_rows(text)[1][4] == "nan"
    assert "❌ fail" in text and "```mermaid" in text


def test_rule_markdown_of_several_seeds_and_without_a_rule():
    both = rule_markdown([rule_run([0.995] * 3, True), rule_run([0.99] * 3, False)])
    assert both.count("### `net`") == 2 and both.count("```mermaid") == 2
    plain = rule_run([0.97], True)
    del plain["rule"]
    assert "No rule in this result: the threshold is the recipe's min_accuracy, 99.40%." in rule_markdown(plain)


def test_rule_markdown_escapes_what_it_did_not_write():
    text = rule_markdown(rule_run([0.99], False, model="x`|<script>\n", reason="<b>bold</b> | pipe"))
    assert "<script>" not in text and "<b>" not in text
    assert text.splitlines()[0] == "### `x'\\|&lt;script&gt;`: the accuracy rule, ❌ fail"
    assert "&lt;b&gt;bold&lt;/b&gt; \\| pipe" in text


def test_main_renders_files_and_names_a_bad_one(tmp_path, capsys):
    good, bad = tmp_path / "rule.json", tmp_path / "error.json"
    good.write_text(json.dumps(rule_run([0.995] * 3, True)))
    bad.write_text("mnist-arch train: Model net: the model's code raised RuntimeError")
    assert main([str(good)]) == 0
    assert "### `net`: the accuracy rule, ✅ pass" in capsys.readouterr().out
    assert main([str(bad), str(good)]) == 2
    out, err = capsys.readouterr()
    assert "✅ pass" in out, "the other files are still rendered"
    assert err.count("\n") == 1 and f"{bad} is not the JSON of `mnist-arch train NAME --tier rule" in err
    assert main([]) == 2 and "usage" in capsys.readouterr().err


def test_the_chart_imports_no_torch():
    # The rule job renders in the command line's own process, which never imports torch.
    script = "import sys, mnist_arch.chart; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
