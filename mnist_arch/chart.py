"""A rule run where people look rather than read: its test accuracy per epoch against the threshold as a
Mermaid `xychart-beta` block, which GitHub renders in Markdown (the job summary, a pull-request comment), so
no image is uploaded anywhere; and the Markdown of a run of the rule tier around it (the verdict, a row per
epoch, the chart), read from the JSON that `mnist-arch train NAME --tier rule --format json` writes.

    python -m mnist_arch.chart rule.json [...]   # the Markdown of each run, for $GITHUB_STEP_SUMMARY

No torch here (the rule job renders with it, and so can anything that holds the JSON). docs/rule-ci.md shows
a rendered chart.
"""

from __future__ import annotations

import html
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The most epochs one chart draws (the last ones); a rule states 15 or 20.
MAX_POINTS = 100
#: The most characters of a model name in a chart's title.
MAX_NAME = 40
#: Colours of the two lines, in order: the accuracy (blue) and the threshold (red).
PALETTE = "#2563eb, #dc2626"
# What a title keeps of a name: Mermaid's quoted strings end at '"', and '#', ';', brackets, braces, '%',
# '<', '>' and backticks are entity codes, statements, directives, HTML or the end of the Markdown fence.
_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:()/+=-]")


def _percent(value: Any) -> float | None:
    """An accuracy (a fraction) in percent, None when it is missing or not a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return 100.0 * value if 0 <= value <= 1 else None


def safe_label(text: Any, limit: int = MAX_NAME) -> str:
    """`text` as a Mermaid string can hold it: safe characters only, one line, at most `limit` of them."""
    clean = _UNSAFE.sub("_", " ".join(str(text).split()))
    return clean if len(clean) <= limit else clean[:limit - 3].rstrip() + "..."


def accuracy_chart(accuracies: Sequence[float | None], threshold: float | None = None, name: str = "",
                   first_epoch: int = 1) -> str:
    """A ```mermaid block: `accuracies` (fractions of the test set, one per epoch from `first_epoch`) as a line
    in percent, and `threshold` (a fraction) as a flat line. A missing or NaN epoch is drawn at the foot of the
    y-axis and its x label says "n/a"; the y-axis spans the values and the threshold, within 0-100."""
    values = [_percent(a) for a in accuracies]
    epochs = list(range(first_epoch, first_epoch + len(values)))
    if len(values) > MAX_POINTS:
        values, epochs = values[-MAX_POINTS:], epochs[-MAX_POINTS:]
    line = _percent(threshold)
    known = [v for v in values if v is not None] + ([line] if line is not None else [])
    low, high = _bounds(known)
    labels = [f'"{e}"' if v is not None else f'"{e} n/a"' for e, v in zip(epochs, values, strict=True)]
    title = f"{safe_label(name)}: test accuracy per epoch" if safe_label(name) else "test accuracy per epoch"
    if line is not None:
        title += f", threshold {line:.2f}%"
    if len(epochs) < len(accuracies):
        title += f" (epochs {epochs[0]}-{epochs[-1]})"
    lines = [
        "```mermaid",
        f'%%{{init: {{"themeVariables": {{"xyChart": {{"plotColorPalette": "{PALETTE}"}}}}}}}}%%',
        "xychart-beta",
        f'    title "{title}"',
        f'    x-axis "epoch" [{", ".join(labels)}]' if labels else '    x-axis "epoch" ["-"]',
        f'    y-axis "test accuracy (%)" {_number(low)} --> {_number(high)}',
        f"    line [{', '.join(_number(low if v is None else v) for v in values) or _number(low)}]",
    ]
    if line is not None:
        lines.append(f"    line [{', '.join(_number(line) for _ in (values or [None]))}]")
    lines.append("```")
    return "\n".join(lines) + "\n"


def _bounds(values: Sequence[float]) -> tuple[float, float]:
    """A y-axis of whole percent points around `values`, with a little room, within 0-100."""
    if not values:
        return 0.0, 100.0
    lo, hi = min(values), max(values)
    pad = max(0.2, 0.05 * (hi - lo))
    low, high = max(0.0, math.floor(lo - pad)), min(100.0, math.ceil(hi + pad))
    if high - low < 1:
        low, high = (high - 1, high) if high - 1 >= 0 else (low, low + 1)
    return float(low), float(high)


def _number(value: float) -> str:
    """A number as Mermaid's grammar reads it: plain decimals, no exponent."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


# ---------------------------------------------------------------------------------------------
# The Markdown of a rule run


def rule_markdown(result: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """The Markdown of one rule run (a dict of `train --tier rule --format json`) or of several (its list, one
    per seed): the verdict, the rule, a row per epoch with whether it held the threshold, and the chart."""
    if not isinstance(result, Mapping):
        return "\n".join(rule_markdown(r) for r in result)
    history = [e for e in result.get("history") or [] if isinstance(e, Mapping)]
    rule = result.get("rule") if isinstance(result.get("rule"), Mapping) else {}
    threshold = rule.get("threshold", result.get("min_accuracy"))
    name = _inline(result.get("model", "model"))
    passed = result.get("passed") is True
    verdict = "✅ pass" if passed else "❌ fail"
    lines = [f"### `{name}`: the accuracy rule, {verdict}", ""]
    if rule:
        consecutive, epochs = _inline(rule.get("consecutive", "?")), _inline(rule.get("epochs", "?"))
        lines.append(f"The rule: {_pct(threshold)} test accuracy on the 10,000 test images, held for {consecutive} "
                     f"epochs in a row within {epochs} epochs.")
    else:
        lines.append(f"No rule in this result: the threshold is the recipe's min_accuracy, {_pct(threshold)}.")
    if result.get("reason"):  # the trainer's own words for its verdict
        lines.append(f"The trainer's verdict: {_inline(result['reason']).rstrip('.')}.")
    streak = _longest_streak(history, threshold)
    held = (f"epochs {_inline(streak[0])}-{_inline(streak[-1])}" if len(streak) > 1
            else f"epoch {_inline(streak[0])}") if streak else "none"
    lines.append(f"Longest run of epochs at or above the threshold: {held} ({len(streak)}); "
                 f"{len(history)} epoch(s) ran in {_seconds(result.get('seconds'))}.")
    collapsed = result.get("collapsed")
    if isinstance(collapsed, Mapping) and not result.get("reason"):  # the trainer's verdict names a collapse
        lines.append(f"Collapsed: {_pct(collapsed.get('share'))} of the test predictions are class "
                     f"{_inline(collapsed.get('class', '?'))} (an MNIST class is about 10%).")
    lines += ["", "| epoch | test accuracy | held | test loss | train loss | lr | seconds |",
              "| ---: | ---: | :---: | ---: | ---: | ---: | ---: |"]
    for e in history:
        accuracy = _percent(e.get("test_accuracy"))
        held_mark = "-" if accuracy is None or _percent(threshold) is None else (
            "✅" if accuracy >= _percent(threshold) else "❌")
        lines.append(f"| {_inline(e.get('epoch', '?'))} | {_pct(e.get('test_accuracy'))} | {held_mark} | "
                     f"{_float(e.get('test_loss'), 4)} | {_float(e.get('train_loss'), 4)} | {_float(e.get('lr'), 5)} | "
                     f"{_float(e.get('seconds'), 1)} |")
    first = history[0].get("epoch", 1) if history else 1
    first = first if isinstance(first, int) and not isinstance(first, bool) else 1
    lines += ["", accuracy_chart([e.get("test_accuracy") for e in history], threshold, result.get("model", ""),
                                 first).rstrip("\n")]
    where = [str(result.get(key)) for key in ("device", "setting") if result.get(key)]
    if result.get("threads"):
        where.append(f"{result['threads']} thread(s)")
    if where:
        lines += ["", f"<sub>Trained on {_inline(', '.join(where))}.</sub>"]
    return "\n".join(lines) + "\n"


def _longest_streak(history: Sequence[Mapping[str, Any]], threshold: Any) -> list[Any]:
    """The epochs of the longest run in a row at or above `threshold` (the first, on a tie)."""
    from mnist_arch.runs import in_a_row

    line = _percent(threshold)
    counts = in_a_row(line is not None and (a := _percent(e.get("test_accuracy"))) is not None and a >= line
                      for e in history)
    longest = max(counts, default=0)
    if not longest:
        return []
    end = counts.index(longest) + 1
    return [e.get("epoch") for e in history[end - longest : end]]


def _inline(value: Any) -> str:
    """Text safe inside a Markdown line, a table cell or a code span: no HTML, pipes, backticks or newlines."""
    return html.escape(" ".join(str(value).split())).replace("|", "\\|").replace("`", "'")


def _pct(value: Any) -> str:
    percent = _percent(value)
    return "n/a" if percent is None else f"{percent:.2f}%"


def _float(value: Any, digits: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def _seconds(value: Any) -> str:
    return f"{_float(value, 1)} s" if _float(value, 1) != "-" else "an unknown time"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mnist_arch.chart FILE...`: the Markdown of each rule run's JSON; exit 2 on a file that is not
    such JSON (one line on stderr), having printed the others."""
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m mnist_arch.chart RULE.json [...] (what `mnist-arch train NAME --tier rule --format "
              "json` writes)", file=sys.stderr)
        return 2
    status = 0
    for path in paths:
        try:
            result = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(result, (dict, list)) or not all(isinstance(r, dict) for r in (
                    result if isinstance(result, list) else [result])):
                raise ValueError("not a run (an object) or a list of runs")
        except (OSError, ValueError) as exc:
            print(f"mnist-arch chart: {path} is not the JSON of `mnist-arch train NAME --tier rule --format json` "
                  f"({exc}).", file=sys.stderr)
            status = 2
            continue
        print(rule_markdown(result))
    return status


if __name__ == "__main__":  # pragma: no cover - run as a module by the rule job
    sys.exit(main())
