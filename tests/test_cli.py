"""The `optarena` command's own behaviour (the claims and compare pipelines have their own tests)."""

import subprocess
import sys

import pytest

from optarena import cli, rules


def test_optimizers_table_lists_every_optimizer_and_convention(capsys, monkeypatch):
    monkeypatch.setattr(cli.console.stdout, "width", 250)  # no wrapping inside cells
    assert cli.main(["optimizers"]) == 0
    out = capsys.readouterr().out
    for name in rules.names():
        assert name in out
    for convention in rules.CONVENTIONS:
        assert convention in out
    # defaults and formulas are printed, e.g. Adam's eps under keras and the article's AdaGrad rule
    assert "eps=1e-07" in out
    assert "sqrt(G + eps)" in out
    assert "none: torch.optim has no FTRL" in out


def test_unknown_claim_id_is_a_clear_error(tmp_path, capsys):
    code = cli.main(["claims", "--only", "R1,X9", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    err = captured.err.strip()
    assert err.count("\n") == 0 and "X9" in err and "R1" in err and "M4" in err
    assert not (tmp_path / "out").exists()


def test_report_without_a_store_is_a_clear_error(tmp_path, capsys):
    code = cli.main(["report", "--store", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert "no store" in captured.err and captured.err.strip().count("\n") == 0


def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["claims", "--device", "cuda", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no CUDA" in err and "--device" in err
    assert not (tmp_path / "out").exists()


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "optarena.cli", "optimizers"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "nadam" in result.stdout


def test_trajectories_writes_one_figure_per_problem(tmp_path):
    assert cli.main(["trajectories", "--out", str(tmp_path)]) == 0
    for problem in ("rosenbrock", "narrow_valley"):
        png = tmp_path / f"trajectories-{problem}.png"
        assert png.read_bytes().startswith(b"\x89PNG")


def test_an_out_that_is_a_file_is_refused_before_training(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    code = cli.main(["claims", "--only", "M2", "--out", str(target)])
    captured = capsys.readouterr()
    assert code == 2 and "--out" in captured.err and "is a file" in captured.err
    assert target.read_text() == "not a folder"


def test_report_with_runs_missing_names_them_and_trains_nothing(tmp_path, capsys):
    from optarena.store import Store

    path = tmp_path / "store.sqlite"
    Store(path).close()  # a store with no runs in it
    code = cli.main(["report", "--only", "M2", "--store", str(path), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 1 and err.count("\n") == 0
    assert "runs are not in the store" in err and "M2/noisy_quadratic/quick" in err and "optarena claims --store" in err
    with Store(path) as store:
        assert len(store) == 0
    assert not (tmp_path / "out" / "verdicts.json").exists()
