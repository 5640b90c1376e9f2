"""`mnist-arch` end to end: exit codes 0/1/2, the JSON contract, and no traceback for bad input."""

import json
import shutil
import subprocess
import sys

import pytest

import mnist_arch
from mnist_arch.cli import main

JSON_MODEL_KEYS = ["name", "params", "trainable_params", "mult_adds", "passed", "checks"]
JSON_CHECK_KEYS = ["id", "passed", "measured", "expected", "message", "warning"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_all_json(capsys):
    code, out, _ = run(capsys, "check", "--format", "json")
    data = json.loads(out)
    assert list(data) == ["models", "mnist_arch_version"] and data["mnist_arch_version"] == mnist_arch.__version__
    counts = {m["name"]: m["params"] for m in data["models"]}
    assert counts == {"bn_dropout_cnn": 19_576, "micro_cnn": 9_594, "parallel_cnn": 28_581_966,
                      "slim_cnn": 9_956, "wide_cnn": 11_705_450}
    for m in data["models"]:
        assert list(m) == JSON_MODEL_KEYS and m["passed"]
        assert all(list(c) == JSON_CHECK_KEYS for c in m["checks"])
    assert code == 0


def test_user_model_json(capsys, user_models):
    code, out, _ = run(capsys, "check", "--model", f"{user_models}/nets.py:Frozen", "--max-params", "20000",
                       "--format", "json")
    (m,) = json.loads(out)["models"]
    assert (code, m["params"], m["trainable_params"], m["passed"]) == (0, 330, 170, True)


def test_user_model_failing_requirements_exit_1(capsys, user_models):
    code, out, _ = run(capsys, "check", "--model", f"{user_models}/nets.py:GroupNormNet",
                       "--max-params", "20000", "--require", "batchnorm", "--require", "dropout")
    assert code == 1
    assert "FAIL  require.batchnorm" in out and "FAIL  require.dropout" in out


def test_over_budget_exit_1(capsys):
    code, out, _ = run(capsys, "check", "wide_cnn", "--max-params", "10,000,000")
    assert code == 1 and "budget at most 10,000,000 (1,705,450 over)" in out


def test_spec_file(capsys, tmp_path, user_models):
    spec = tmp_path / "budget.toml"
    spec.write_text('max_params = 100\nrequire = ["gap"]\n[layers]\nconv = [8, 26, 26]\n')
    code, out, _ = run(capsys, "check", "--model", f"{user_models}/nets.py:Dropout2dNet", "--spec", str(spec),
                       "--format", "markdown")
    assert code == 1  # 170 + 80 = 250 parameters > 100
    assert out.startswith("## mnist-arch check") and "| `params.max` | FAIL |" in out


@pytest.mark.parametrize("argv, message", [
    (["check", "--model", "{u}/nets.py:NeedsArgs"], "needs arguments (width)"),
    (["check", "--model", "{u}/broken_import.py:Net"], "broken_import.py does not import"),
    (["check", "--model", "{u}/syntax_error.py:Net"], "syntax error at line 3"),
    (["check", "--model", "{u}/nets.py:WrongInput"], "failed on an input of shape (1, 1, 28, 28)"),
    (["check", "nonexistent_cnn"], "No declared or registered model is named 'nonexistent_cnn'"),
    (["check", "--model", "{u}/nets.py:FourD", "--spec", "{u}/missing.toml"], "missing.toml does not exist"),
])
def test_bad_input_exit_2_one_paragraph(capsys, user_models, argv, message):
    code, out, err = run(capsys, *[a.format(u=user_models) for a in argv])
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1  # one paragraph


def test_bad_spec_file_names_the_field(capsys, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text("max_params = -5\n")
    code, _, err = run(capsys, "check", "micro_cnn", "--spec", str(spec))
    assert code == 2 and f"{spec}: 'max_params' must be a whole number of at least 1, found -5" in err
    spec.write_text("max_parms = 5\n")
    code, _, err = run(capsys, "check", "micro_cnn", "--spec", str(spec))
    assert code == 2 and "unknown field(s) 'max_parms'" in err


@pytest.mark.parametrize("argv", [["check", "--max-params", "lots"], ["check", "--require", "attention"],
                                  ["check", "--input-shape", "28,28"], ["frobnicate"]])
def test_bad_arguments_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_list_and_summary(capsys):
    code, out, _ = run(capsys, "list", "*micro*")
    assert code == 0 and out.split()[0] == "micro_cnn" and "9,594" in out
    code, out, _ = run(capsys, "summary", "wide_cnn")
    assert code == 0 and "11,705,450" in out and "48,013,802" in out and "receptive field" in out


def test_console_script_no_traceback(user_models):
    exe = shutil.which("mnist-arch", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "the console script is installed beside the interpreter"
    proc = subprocess.run([exe, "check", "--model", f"{user_models}/broken_import.py:Net"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "cannot find weights.pt" in proc.stderr
