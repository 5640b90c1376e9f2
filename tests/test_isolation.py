"""Issue 8: a user's model cannot change the verdict's channel. Each hostile model in
tests/user_models/hostile/ misbehaves in one way; the command line must still answer with the right exit
code, one paragraph naming the model and the phase, and a report that parses."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_arch import isolate
from mnist_arch.cli import main
from mnist_arch.errors import MnistArchError

HOSTILE = Path(__file__).resolve().parent / "user_models" / "hostile"
NETS = HOSTILE / "nets.py"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_paragraph(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("attr, phase, words", [
    ("ExitsWhileBuilt", "build", "exited the process with code 0 while being built"),
    ("OsExitInForward", "forward", "exited the process with code 0, before a result came back"),
    ("ExitsInForward", "forward", "exited the process with code 3 while running its forward pass"),
    ("InterruptsInForward", "forward", "raised KeyboardInterrupt while running its forward pass"),
    ("Allocates", "forward", "ran out of memory"),
    ("OnMeta", "", "on the meta device"),
])
def test_a_model_that_exits_or_breaks_is_exit_2(capsys, attr, phase, words):
    code, out, err = run(capsys, "check", "--model", f"{NETS}:{attr}", "--max-params", "1000", "--format", "json")
    assert code == 2 and json.loads(out)["models"] == []  # the report still parses; it judged nothing
    assert words in err and f"nets.py:{attr}" in err and one_paragraph(err)
    if phase:
        assert f"(phase: {phase})" in err


def test_script_without_main_guard_is_exit_2_and_shows_what_it_printed(capsys):
    code, _, err = run(capsys, "check", "--model", f"{HOSTILE}/script_without_guard.py:Net")
    assert code == 2 and "exited the process with code 0 while being imported" in err
    assert "The model printed: training..." in err and one_paragraph(err)


def test_sys_exit_as_the_model_itself(capsys):
    code, _, err = run(capsys, "check", "--model", "sys:exit")
    assert code == 2 and "exited the process" in err and one_paragraph(err)


@pytest.mark.parametrize("attr, timeout, phase", [("SleepsInForward", 2, "forward"), ("LoopsInInit", 2, "build")])
def test_a_hanging_model_is_stopped_at_the_limit(capsys, attr, timeout, phase):
    code, _, err = run(capsys, "check", "--model", f"{NETS}:{attr}", "--timeout", timeout)
    assert code == 2 and f"stopped at the time limit of {timeout} s" in err and f"(phase: {phase})" in err
    assert one_paragraph(err)


def test_prints_never_reach_the_report(capsys):
    code, out, _ = run(capsys, "check", "--model", f"{NETS}:PrintsInForward", "--model",
                       f"{HOSTILE}/prints_at_import.py:Net", "--format", "json")
    models = json.loads(out)["models"]  # parses: nothing the models printed is in it
    assert code == 0 and [m["params"] for m in models] == [90, 7850]
    code, out, _ = run(capsys, "check", "--model", f"{NETS}:PrintsInForward", "--format", "markdown")
    assert "hello" not in out and out.startswith("## mnist-arch check")


def test_one_broken_model_does_not_hide_the_others(capsys):
    code, out, err = run(capsys, "check", "--model", f"{NETS}:Small", "--model", f"{NETS}:ExitsWhileBuilt",
                         "--format", "json")
    assert code == 2 and [m["name"] for m in json.loads(out)["models"]] == [f"{NETS}:Small"]
    assert "ExitsWhileBuilt" in err and one_paragraph(err)


def test_layers_built_on_the_first_call_are_counted():
    import torch

    from mnist_arch.checks import check_model
    from mnist_arch.spec import Spec
    from mnist_arch.trace import count_parameters
    from tests.user_models.hostile.nets import BuildsOnFirstCall

    model = BuildsOnFirstCall()
    assert count_parameters(model)[0] == 40  # before any forward: the shell
    model(torch.zeros(1, 1, 28, 28))
    whole = count_parameters(model)[0]  # counted independently, after a forward of our own
    report = check_model(BuildsOnFirstCall(), Spec(max_params=1000))
    assert report.params == whole == 40 + (4 * 8 * 9 + 8) + (8 * 24 * 24 * 10 + 10)
    assert not report.passed  # 46,426 > 1,000: the budget is not fooled
    assert report.mult_adds == 40 * 26 * 26 + 296 * 24 * 24 + 46090  # consistent with the count


def test_a_count_that_keeps_changing_fails():
    from mnist_arch.checks import check_model
    from mnist_arch.spec import Spec
    from tests.user_models.hostile.nets import GrowsEveryCall

    report = check_model(GrowsEveryCall(), Spec())
    (stable,) = [c for c in report.checks if c.id == "params.stable"]
    assert not stable.passed and stable.measured == [93, 96, 99, 102]  # three eval calls, one training call


def test_a_buffer_that_grows_in_forward_is_judged_and_restored():
    from mnist_arch.checks import check_model
    from mnist_arch.spec import Spec
    from tests.user_models.hostile.nets import GrowingBuffer

    model = GrowingBuffer()
    report = check_model(model, Spec(require=frozenset({"gap"})))
    assert report.passed and report.params == 90


def test_teams_with_their_own_helpers_module_each_get_their_own(capsys):
    here = Path(__file__).resolve().parent / "user_models"
    code, out, _ = run(capsys, "check", "--model", f"{here}/teamA/net.py:Net", "--model", f"{here}/teamB/net.py:Net",
                       "--format", "json")
    assert code == 0 and [m["params"] for m in json.loads(out)["models"]] == [90, 330]


def test_module_form_imports_from_the_current_folder(monkeypatch, capsys):
    monkeypatch.chdir(Path(__file__).resolve().parent / "user_models")
    code, out, _ = run(capsys, "check", "--model", "mypkg.models:Net", "--max-params", "8000", "--format", "json")
    assert code == 0 and json.loads(out)["models"][0]["params"] == 7850


def test_unknown_mult_adds_never_pass_a_budget(capsys):
    code, out, err = run(capsys, "check", "--model", f"{NETS}:scripted", "--max-mult-adds", "10", "--format", "json")
    (m,) = json.loads(out)["models"]
    (budget,) = [c for c in m["checks"] if c["id"] == "mult_adds.max"]
    assert code == 1 and m["mult_adds"] is None and not budget["passed"] and "unknown" in budget["message"]


def test_weight_norm_mult_adds_are_measured(capsys):
    code, out, _ = run(capsys, "check", "--model", f"{NETS}:weight_normed", "--max-mult-adds", "100000",
                       "--format", "json")
    (m,) = json.loads(out)["models"]
    assert code == 0 and m["mult_adds"] == 40 * 26 * 26 + 50  # as for the plain layers


def test_torchscript_features_cannot_be_judged(capsys):
    code, _, err = run(capsys, "check", "--model", f"{NETS}:scripted", "--require", "gap")
    assert code == 2 and "cannot judge require" in err and one_paragraph(err)
    spec = HOSTILE / "layers.toml"
    code, _, err = run(capsys, "check", "--model", f"{NETS}:scripted", "--spec", spec)
    assert code == 2 and "cannot judge layers" in err


@pytest.mark.parametrize("kind", ["scripted", "traced"])
def test_a_torchscript_receptive_field_cannot_be_judged_and_is_not_blamed_on_the_model(capsys, tmp_path, kind):
    spec = tmp_path / "rf.toml"
    spec.write_text("min_receptive_field = 5\n")
    code, _, err = run(capsys, "check", "--model", f"{NETS}:{kind}", "--spec", spec)
    assert code == 2 and "cannot judge min_receptive_field" in err and one_paragraph(err), err
    assert "the model's code raised" not in err


def test_requirements_add_up_from_file_and_command_line(capsys, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('require = ["fc"]\n')
    code, out, _ = run(capsys, "check", "--model", f"{NETS}:Small", "--spec", spec, "--require", "gap",
                       "--format", "json")
    ids = [c["id"] for c in json.loads(out)["models"][0]["checks"]]
    assert code == 0 and "require.fc" in ids and "require.gap" in ids


@pytest.mark.parametrize("field, value, words", [
    ("final_activation", '"relu"', "'final_activation' must be one of logits, softmax, log_softmax"),
    ("lint_errors", '["double_sofmax"]', "unknown: double_sofmax"),
    ("input_shape", "[1, 100000, 100000]", "the limit is 16,777,216"),
    ("input_shape", "[28, 28]", "three positive whole numbers"),
    ("require_any", "[[]]", "non-empty groups"),
])
def test_spec_values_validated(capsys, tmp_path, field, value, words):
    spec = tmp_path / "s.toml"
    spec.write_text(f"{field} = {value}\n")
    code, _, err = run(capsys, "check", "--model", f"{NETS}:Small", "--spec", spec)
    assert code == 2 and words in err and str(spec) in err and one_paragraph(err)


def test_input_shape_limit_on_the_command_line(capsys):
    code, _, err = run(capsys, "check", "--model", f"{NETS}:Small", "--input-shape", "1,100000,100000")
    assert code == 2 and "the limit is 16,777,216" in err and one_paragraph(err)


@pytest.mark.parametrize("argv", [
    ["train", "micro_cnn", "--seed", "5-1"],
    ["train", "micro_cnn", "--seed", "5-1", "--format", "markdown"],
    ["bench", "micro_cnn", "--min-time", "inf"],
    ["bench", "micro_cnn", "--min-time", "-1"],
    ["check", "--timeout", "0"],
    ["check", "--timeout", "nan"],
    ["train", "micro_cnn", "--time-budget", "inf"],
])
def test_empty_seed_ranges_and_bad_times_are_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_summary_of_a_model_whose_forward_fails_is_exit_2(capsys, user_models):
    code, out, err = run(capsys, "summary", f"{user_models}/nets.py:WrongInput")
    assert code == 2 and "Traceback" not in err and "WrongInput" in err


def test_console_script_exit_is_not_a_pass(tmp_path):
    """The whole process, as CI runs it: a model that exits 0 must not make the gate exit 0."""
    exe = Path(sys.executable).parent / "mnist-arch"
    proc = subprocess.run([str(exe), "check", "--model", f"{NETS}:OsExitInForward"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr


PROBE = '''
import sys
sys.path.insert(0, sys.argv[2])
from probe import dynamo_imported
from mnist_arch import isolate
if sys.argv[1] == "train":
    isolate.expect_training()
print(isolate.run_isolated("probe", dynamo_imported, extra_path=[sys.argv[2]]))
'''


@pytest.mark.parametrize("command, imported", [("train", True), ("check", False)])
def test_the_fork_server_imports_torch_dynamo_only_for_training(tmp_path, command, imported):
    """Every torch.optim optimizer imports torch._dynamo (about 1 s); a process that will train says so
    first, and its workers start with it imported instead of each importing it again. One that only
    checks models does not pay for it. Fresh processes: this one's fork server may be running already."""
    (tmp_path / "probe.py").write_text(
        "import sys\n\ndef dynamo_imported():\n    return 'torch._dynamo' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", PROBE, command, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(imported)


def test_train_says_it_will_train_before_the_first_worker_starts(capsys, monkeypatch):
    """mnist-arch train calls expect_training before anything can start the fork server (the registry is
    read through a worker in a parent without torch); here it then stops at a model nobody declared."""
    from mnist_arch import isolate, project

    calls = []
    monkeypatch.setattr(isolate, "expect_training", lambda: calls.append("expect_training"))
    original = project.load_project
    monkeypatch.setattr(project, "load_project", lambda *a, **k: (calls.append("load_project"), original(*a, **k))[1])
    code, _, err = run(capsys, "train", "no_such_model")
    assert code == 2 and "No declared or registered model is named 'no_such_model'" in err
    assert calls == ["expect_training", "load_project"]


class _Unreadable:
    """Pickled in the parent, it cannot be unpickled in the worker: int("not a number") raises there."""

    def __reduce__(self):
        return (int, ("not a number",))


def test_a_job_the_worker_cannot_take_is_ours_not_the_models_and_the_worker_goes_on():
    with isolate.Worker("probe", 60) as worker:
        for job, args in (("no_such_job", ()), (len, (_Unreadable(),))):
            with pytest.raises(MnistArchError) as info:
                worker.call(job, *args)
            assert str(info.value).startswith("mnist-arch's own set-up failed, not the model's code: the worker could "
                                              "not take its job ("), str(info.value)
        assert "no job named 'no_such_job'" in str(info.value) or "ValueError" in str(info.value)
        assert worker.call(len, "abc") == 3
