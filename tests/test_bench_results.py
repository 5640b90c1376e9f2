"""mnist_arch.bench_results and mnist_arch.roofline: the parent side of `mnist-arch bench` classifies and prints the
rows its workers measured without importing torch (issue 26)."""

import subprocess
import sys

SCRIPT = """
import sys
from mnist_arch.bench_results import FORMATS, Row, SetUp, parse_path, result_of
from mnist_arch.roofline import Peaks

peaks = Peaks("cpu", {"fp32": 1e11}, bytes_per_s=2e10, matmul_size=2048, copy_bytes=1)
setup = SetUp("cpu", (parse_path("eager"), parse_path("bf16+channels_last")), 2, peaks, "Test CPU", "x", None,
              {"micro_cnn": "micro.pt"})
rows = [Row("micro_cnn", "forward", "eager", "cpu", "fp32", b, images_per_s=100.0 * b, arithmetic_intensity=50.0)
        for b in (1, 64)]
rows.append(Row("micro_cnn", "forward", "channels_last+bf16", "cpu", "bf16", 64, error="RuntimeError: x"))
result = result_of(rows, [], setup, 0.5)
for render in FORMATS.values():
    assert render(result)
print(result.errors, [r.bound for r in rows], result.meta["weights"], "torch" in sys.modules)
"""


def test_rows_are_classified_and_rendered_without_torch():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == (
        "['Model micro_cnn: the channels_last+bf16 row at batch 64 failed: RuntimeError: x'] "
        "['launch overhead', 'compute', None] {'micro_cnn': 'micro.pt'} False")
