"""The results of a benchmark run as plain data, and their rendering: the path names, a row per (model, path,
batch size) or training step, the run's result, and the table, JSON and Markdown `mnist-arch bench` prints.

No torch: the parent side (`mnist_arch.jobs.bench_project`, the command line) parses the paths asked for and
renders the rows its workers measured without importing it. The measuring is `mnist_arch.bench`'s; what
bounds a row, `mnist_arch.roofline`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from mnist_arch.errors import MnistArchError
from mnist_arch.roofline import OVERHEAD_RATIO, Peaks, classify

#: Modifiers a path may combine, in the order they are applied; "eager" is none of them.
MODIFIERS = ("channels_last", "bf16", "compile", "cuda_graphs")
CPU_PATHS = ("eager", "channels_last", "bf16", "compile")
CUDA_PATHS = ("eager", "channels_last", "bf16", "compile", "cuda_graphs")
BATCH_SIZES = (1, 64, 1024)


def parse_path(text: str) -> str:
    """The canonical name of a path ("eager" or modifiers joined by "+" in `MODIFIERS` order)."""
    parts = {p.strip() for p in text.split("+") if p.strip()} - {"eager"}
    unknown = sorted(parts - set(MODIFIERS))
    if unknown or not text.strip():
        raise MnistArchError(
            f"Unknown benchmark path {text!r}: a path is 'eager' or a '+'-joined combination of "
            f"{', '.join(MODIFIERS)} (e.g. channels_last+bf16)."
        )
    return "+".join(m for m in MODIFIERS if m in parts) or "eager"


@dataclass
class Row:
    """One measured (model, path, batch size), or a training step; skipped or failed with the reason."""

    model: str
    kind: str  # "forward" | "train"
    path: str
    device: str
    dtype: str
    batch_size: int
    images_per_s: float | None = None
    median_s: float | None = None
    rounds: int = 0
    setup_s: float | None = None
    mult_adds: int | None = None
    params: int | None = None
    flops_per_s: float | None = None
    peak_fraction: float | None = None
    arithmetic_intensity: float | None = None  # FLOPs / byte, see roofline.traffic_bytes
    bound: str | None = None  # "compute" | "memory" | "launch overhead"
    max_abs_diff: float | None = None
    top1_agreement: float | None = None
    input: str | None = None  # "mnist-test" | "random"
    note: str = ""  # optimizer, loss and precision of a training row
    skipped: str | None = None  # the reason a path could not run here
    error: str | None = None  # why this row failed (the other rows are still measured)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SetUp:
    """What a run's set-up found where it measures (`bench.set_up`, in the set-up worker of
    `jobs.bench_project`): the device and the paths (the device's defaults unless asked for), the torch threads
    every row runs with, the machine's practical peak (None unless measured), the checkpoint of trained weights
    for the model it belongs to, and the facts the report's header names."""

    device: str
    paths: tuple[str, ...]
    threads: int
    peaks: Peaks | None
    device_name: str
    torch: str
    cudnn_allow_tf32: bool | None  # on CUDA: whether cuDNN may use TF32 for fp32 convolutions
    weights: dict[str, str] = field(default_factory=dict)  # model name -> checkpoint


@dataclass
class BenchResult:
    """A run's header facts (`meta`), peaks and rows, and the models that could not be measured."""

    meta: dict[str, Any]
    peaks: Peaks | None
    rows: list[Row]
    errors: list[str] = field(default_factory=list)  # models that could not be measured, and why (stderr)

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "peaks": asdict(self.peaks) if self.peaks else None,
                "rows": [r.to_dict() for r in self.rows]}


def result_of(rows: list[Row], errors: list[str], setup: SetUp, min_time: float) -> BenchResult:
    """The rows of a run classified (`roofline.classify`) and its errors, each failed row's among them."""
    classify(rows, setup.peaks)
    errors = errors + [f"Model {r.model}: the {row_label(r)} failed: {r.error}" for r in rows if r.error]
    meta = {"device": setup.device, "device_name": setup.device_name, "torch": setup.torch,
            "weights": dict(setup.weights), "threads": setup.threads, "min_time_s": min_time,
            "cudnn_allow_tf32": setup.cudnn_allow_tf32}
    return BenchResult(meta, setup.peaks, rows, errors)


def row_label(row: Row) -> str:
    """A row as a message names it: "training step", "eager row at batch 64"."""
    return "training step" if row.kind == "train" else f"{row.path} row at batch {row.batch_size}"


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}".rstrip()
    return f"{x:.3g} {unit}".rstrip()


def _ips(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _peaks_line(peaks: Peaks | None) -> str:
    if peaks is None:
        return "peak not measured"
    n = peaks.matmul_size
    bf16 = _si(peaks.flops["bf16"], "FLOP/s") if "bf16" in peaks.flops else "not measured (no native bf16)"
    return (f"practical peak on {peaks.device}: {n}x{n} matmul fp32 {_si(peaks.flops['fp32'], 'FLOP/s')}, "
            f"bf16 {bf16}; copy {_si(peaks.bytes_per_s, 'B/s')}")


def to_json(result: BenchResult) -> str:
    return json.dumps(result.to_dict(), indent=2)


def to_table(result: BenchResult) -> str:
    m = result.meta
    lines = [f"{m['device_name']} ({m['device']}), {m['threads']} thread(s), torch {m['torch']}",
             _peaks_line(result.peaks),
             f"{'model':15} {'kind':7} {'path':22} {'batch':>5} {'images/s':>12} {'FLOP/s':>11} "
             f"{'of peak':>7} {'bound':15} {'max|dlogit|':>11} {'top-1 agree':>11}"]
    for r in result.rows:
        head = f"{r.model:15} {r.kind:7} {r.path:22} {r.batch_size:>5} "
        if r.skipped or r.error:
            lines.append(head + (f"skipped: {r.skipped}" if r.skipped else f"error: {r.error}"))
            continue
        diff = "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.2e}"
        agree = "-" if r.top1_agreement is None else f"{r.top1_agreement:.4f}"
        lines.append(head + f"{_ips(r.images_per_s):>12} {_si(r.flops_per_s):>11} {_pct(r.peak_fraction):>7} "
                     f"{r.bound or '-':15} {diff:>11} {agree:>11}")
    return "\n".join(lines)


def to_markdown(result: BenchResult) -> str:
    m = result.meta
    fwd = [r for r in result.rows if r.kind == "forward"]
    paths = list(dict.fromkeys(r.path for r in fwd))
    threads = f"{m['threads']} thread{'s' if m['threads'] != 1 else ''}"
    lines = [f"Measured with `mnist-arch bench` on {m['device_name']} ({m['device']}, {threads}), "
             f"torch {m['torch']}; images/s are medians of calls repeated for at least {m['min_time_s']} s. "
             f"{_upper_first(_peaks_line(result.peaks))}.", ""]
    if fwd:
        lines += ["| model | batch | " + " | ".join(f"{p} img/s" for p in paths)
                  + " | fastest / eager | fastest path | its share of peak | its bound |",
                  "| --- | ---: | " + " | ".join("---:" for _ in paths) + " | ---: | --- | ---: | --- |"]
        for (model, b), group in _groups(fwd, lambda r: (r.model, r.batch_size)).items():
            by_path = {r.path: r for r in group}
            cells = [("error" if by_path[p].error else _ips(by_path[p].images_per_s)) if p in by_path else "-"
                     for p in paths]
            ran = [r for r in group if r.images_per_s is not None]
            best = max(ran, key=lambda r: r.images_per_s) if ran else None
            eager = by_path.get("eager")
            ratio = (f"{best.images_per_s / eager.images_per_s:.2f}x"
                     if best and eager and eager.images_per_s else "-")
            lines.append(f"| `{model}` | {b} | " + " | ".join(cells) + f" | {ratio} | "
                         f"{best.path if best else '-'} | {_pct(best.peak_fraction) if best else '-'} | "
                         f"{(best.bound or '-') if best else '-'} |")
        skipped = {(r.path, r.skipped) for r in fwd if r.skipped}
        lines += [f"\n`{p}` skipped: {why}" for p, why in sorted(skipped)]
        lines += [f"\n`{r.model}` `{r.path}` batch {r.batch_size} failed: {r.error}" for r in fwd if r.error]
        acc = [r for r in fwd if r.path != "eager" and r.max_abs_diff is not None]
        if acc:
            lines += ["", "Fast paths against eager fp32 (same weights, same batch, largest batch measured):", "",
                      "| model | path | batch | input | max abs output difference | top-1 agreement |",
                      "| --- | --- | ---: | --- | ---: | ---: |"]
            for (model, path), group in _groups(acc, lambda r: (r.model, r.path)).items():
                r = max(group, key=lambda r: r.batch_size)
                lines.append(f"| `{model}` | {path} | {r.batch_size} | {r.input} | {r.max_abs_diff:.2e} | "
                             f"{100 * r.top1_agreement:.2f}% |")
    train = [r for r in result.rows if r.kind == "train"]
    if train:
        lines += ["", "Training step (forward, backward, optimizer step; 3x forward FLOPs):", "",
                  "| model | batch | dtype | optimizer, loss, precision | images/s | of peak | bound |",
                  "| --- | ---: | --- | --- | ---: | ---: | --- |"]
        lines += [f"| `{r.model}` | {r.batch_size or '-'} | {r.dtype} | {r.note or '-'} | "
                  f"{'error' if r.error else _ips(r.images_per_s)} | {_pct(r.peak_fraction)} | {r.bound or '-'} |"
                  for r in train]
        lines += [f"\n`{r.model}` training step failed: {r.error}" for r in train if r.error]
    lines += ["", f"Bound: \"launch overhead\" where the largest batch runs >= {OVERHEAD_RATIO:g}x the images/s; "
              "else \"memory\" below the roofline ridge (peak FLOP/s / copy bandwidth), \"compute\" above it "
              "(see `mnist_arch/roofline.py`)."]
    return "\n".join(lines) + "\n"


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _groups(rows: Iterable[Row], key: Callable[[Row], tuple]) -> dict[tuple, list[Row]]:
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


FORMATS: dict[str, Callable[[BenchResult], str]] = {"table": to_table, "json": to_json, "markdown": to_markdown}
