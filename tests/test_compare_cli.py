"""`optarena compare FILE.py`: the problem file contract and every bad input, through
`compare.add_arguments` / `compare.main` (a stand-in for the lead's cli.py)."""

from __future__ import annotations

import argparse
import json
import textwrap

import pytest

from optarena import comparison as compare
from optarena import console
from optarena.store import Store

GOOD = """
import torch
from torch import nn

batch_size = 8
steps = 6


def model():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return (x[:40], y[:40]), (x[40:], y[40:])
"""


def run_cli(*argv: str) -> int:
    parser = console.Parser(prog="optarena compare")
    compare.add_arguments(parser)
    try:
        return compare.main(parser.parse_args(list(argv)))
    except SystemExit as e:  # argparse's own checks (types, choices) exit 2 with one line
        return e.code


def write(tmp_path, text: str, name: str = "problem.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def fast(path, out, *extra: str) -> tuple[str, ...]:
    return (str(path), "--optimizers", "adam,sgd", "--budget", "2", "--seeds", "2", "--method", "grid",
            "--out", str(out), "--no-progress", *extra)


def test_a_good_file_writes_the_report_and_resumes(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    out = tmp_path / "out"
    assert run_cli(*fast(path, out)) == 0
    printed = capsys.readouterr().out
    assert "recommendation:" in printed and str(out / "report.html") in printed
    assert {p.name for p in out.iterdir()} >= {"report.html", "comparison.json", "optarena.sqlite"}
    saved = json.loads((out / "comparison.json").read_text())
    assert {"recommendation", "reason", "rows"} <= set(saved)
    assert saved["settings"]["steps"] == 6 and saved["problem"]["batch_size"] == 8  # the file's constants
    with Store(out / "optarena.sqlite") as store:
        n = len(store)
    assert n == 2 * (2 + 2 + 2)
    assert run_cli(*fast(path, out)) == 0  # everything comes from the store
    with Store(out / "optarena.sqlite") as store:
        assert len(store) == n
    assert json.loads((out / "comparison.json").read_text())["rows"] == saved["rows"]


def test_a_custom_loss_and_steps_option(tmp_path):
    path = write(tmp_path, GOOD + textwrap.dedent("""
        import torch.nn.functional as F

        def loss(output, target):
            return F.cross_entropy(output, target, label_smoothing=0.1)
    """))
    out = tmp_path / "out"
    assert run_cli(*fast(path, out, "--steps", "4", "--store", str(tmp_path / "s.sqlite"))) == 0
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["settings"]["steps"] == 4 and saved["problem"]["loss"] == "loss"
    assert (tmp_path / "s.sqlite").exists() and not (out / "optarena.sqlite").exists()


BAD_FILES = {
    "import_raises": ("x = 1 / 0\n", "importing the file raised ZeroDivisionError: division by zero", "x = 1 / 0"),
    "no_model": ("def data():\n    return None\n", "defines no model() function", None),
    "no_model_no_data": ("x = 1\n", "defines no model() and no data() function", None),
    "model_raises": (GOOD + "\ndef model():\n    raise RuntimeError('cannot build')\n",
                     "model() raised RuntimeError: cannot build", "raise RuntimeError('cannot build')"),
    "data_raises": (GOOD + "\ndef data():\n    return {}['train']\n", "data() raised KeyError", "return {}['train']"),
    "wrong_input_width": (GOOD + "\ndef model():\n    return nn.Linear(5, 2)\n",
                          "model(X) raised RuntimeError: mat1 and mat2 shapes cannot be multiplied", None),
    "too_few_classes": (GOOD.replace("(x[:, 0] > 0).long()", "(x[:, 0] > 0).long() * 2"),
                        "labels run from 0 to 2 but the model outputs 2 classes", None),
    "loss_shape_mismatch": (GOOD + "\ndef loss(output, target):\n    return ((output - target) ** 2).mean()\n",
                            "loss(output, target) raised RuntimeError: The size of tensor a (2) must match", "((output - target) ** 2)"),
    "bad_constant": (GOOD + "\nsteps = 0\n", "the constant steps must be an integer >= 1, got 0", None),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_give_one_message_and_write_nothing(tmp_path, capsys, case):
    text, cause, user_line = BAD_FILES[case]
    path = write(tmp_path, text)
    out = tmp_path / "out"
    assert run_cli(*fast(path, out, "--store", str(tmp_path / "store.sqlite"))) == 2
    err = capsys.readouterr().err
    first, *rest = err.strip().splitlines()
    assert first.startswith(f"optarena compare: error: {path}: ")
    assert cause in first
    if user_line is not None:  # the user's traceback below the message
        tail = "\n".join(rest)
        assert "Traceback" in tail and str(path) in tail and user_line in tail
    assert sorted(p.name for p in tmp_path.iterdir()) == ["problem.py"]


def test_a_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.py"
    assert run_cli(*fast(missing, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"optarena compare: error: {missing}: no such file"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        (("--optimizers", "adam,adamx"), "unknown optimizer 'adamx'; valid names: sgd, momentum, adagrad, rmsprop, adam, adamw, adadelta, nadam, ftrl"),
        (("--budget", "0"), "budget must be an integer >= 1"),
        (("--threads", "many"), "--threads: must be 'auto' or an integer >= 1"),
    ],
)
def test_bad_options(tmp_path, capsys, option, needle):
    path = write(tmp_path, GOOD)
    argv = list(fast(path, tmp_path / "out"))
    i = argv.index(option[0]) if option[0] in argv else len(argv)
    argv[i:i + 2] = option
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["problem.py"]


def test_the_examples_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "examples"
    for name in ("tabular_regression", "text_bow", "digits_cnn"):
        spec = compare.load_problem_file(root / f"{name}.py")
        assert spec.name == name and callable(spec.model) and callable(spec.data)
        assert spec.steps is not None and spec.batch_size is not None


def test_every_run_failing_exits_1_with_the_first_real_error(tmp_path, capsys, monkeypatch):
    """The report is written (it shows the tracebacks), the exit code says nothing trained, and the
    error named is the exception's line, not the dispatcher's trailing line."""
    from optarena.cli import main as cli_main
    from optarena.study import StudyKey, StudyResult, TunedStudy
    from optarena.trial import RunResult, Trial

    trace = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
             "NotImplementedError: Could not run 'aten::select_backward' with arguments from the 'SparseCPU' backend.\n"
             "SparseCPU: registered at aten/src/ATen/RegisterSparseCPU.cpp:1 [kernel]\n")

    def all_failed(problem, optimizers, budget, seeds, *args, **kwargs):
        study = TunedStudy(StudyKey("compare", problem.name), tuple(optimizers), budget=budget, seeds=seeds)
        result = StudyResult(study)
        for o in optimizers:
            result.tuning[o] = [RunResult(Trial(problem.name, o, "article", {"lr": 0.1}, 0, 5), "failed", error=trace)]
            result.best[o] = {"lr": 0.1}
            result.tuned[o] = [RunResult(Trial(problem.name, o, "article", {"lr": 0.1}, s, 5), "failed", error=trace)
                               for s in (1, 2)]
        return compare.Comparison(result, {"name": problem.name})

    monkeypatch.setattr(compare.cli, "run_comparison", all_failed)  # where main() looks it up
    path = write(tmp_path, GOOD)
    code = cli_main(["compare", *fast(path, tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0
    assert "every one of the 6 runs failed" in err and "NotImplementedError: Could not run 'aten::select_backward'" in err
    assert "registered at" not in err
    assert (tmp_path / "out" / "report.html").exists()


def test_training_setup_and_tuning_options(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    out = tmp_path / "out"
    assert run_cli(*fast(path, out, "--tune", "weight_decay", "--schedule", "warmup-linear", "--warmup", "0.2",
                         "--clip-grad-norm", "5")) == 0
    saved = json.loads((out / "comparison.json").read_text())["settings"]
    assert saved["tune"] == ["weight_decay"] and saved["schedule"] == "warmup-linear" and saved["warmup"] == 0.2
    assert saved["clip_grad_norm"] == 5.0
    capsys.readouterr()
    assert run_cli(*fast(path, tmp_path / "o2", "--warmup", "1.5", "--schedule", "warmup-cosine")) == 2
    assert "warmup must be a fraction" in capsys.readouterr().err


def test_an_out_inside_a_file_is_refused_before_training(tmp_path, capsys):
    from optarena.cli import main as cli_main

    path = write(tmp_path, GOOD)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code = cli_main(["compare", *fast(path, blocker / "out")])
    assert code == 2 and "blocker" in capsys.readouterr().err
