"""`mnist-arch summary`'s rows cross the wall: a worker builds them (`layer_table`), the command line's own process
unpickles and prints them (`layer_rows.FORMATS`), and that process imports no torch (issue 26, item 1)."""

import pickle
import subprocess
import sys

from mnist_arch.layer_rows import FORMATS
from mnist_arch.layer_table import layer_table
from mnist_arch.registry import create_model, get_spec

NO_TORCH = "import sys; assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')], sys.modules"


def _python(script: str, stdin: bytes = b"") -> bytes:
    proc = subprocess.run([sys.executable, "-c", script], input=stdin, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def test_the_rows_their_fields_and_the_check_messages_import_no_torch():
    _python("import mnist_arch.layer_rows, mnist_arch.fields, mnist_arch.check_messages; " + NO_TORCH)


def test_rows_from_a_worker_print_the_same_without_torch():
    name = "micro_cnn"
    rows = layer_table(create_model(name), get_spec(name).input_shape, name)
    assert any(r.receptive_field is not None for r in rows)  # the pickle carries fields too
    script = ("import pickle, sys; from mnist_arch.layer_rows import FORMATS; rows = pickle.load(sys.stdin.buffer); "
              "sys.stdout.write('\\0'.join(FORMATS[f](rows, 'micro_cnn') for f in sorted(FORMATS))); " + NO_TORCH)
    printed = _python(script, pickle.dumps(rows)).decode()
    assert printed.split("\0") == [FORMATS[f](rows, name) for f in sorted(FORMATS)]
