"""benchmarks/sweep_throughput.py runs on a tiny sweep and ends with the two lines issue 6 specifies."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "sweep_throughput.py"
NUMBER = r"(\d+(?:\.\d+)?(?:e[-+]?\d+)?)"
LOGREG = re.compile(rf"sweep speedup logreg: {NUMBER}x \(engine {NUMBER} runs/s, loop {NUMBER} runs/s, max final-loss diff {NUMBER}\)")
MLP = re.compile(rf"sweep speedup mlp: {NUMBER}x \(engine {NUMBER} runs/s, loop {NUMBER} runs/s, max final-loss diff {NUMBER}, {NUMBER}% of matmul peak\)")


def test_sweep_throughput_tiny_prints_the_two_result_lines():
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--no-compile"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    *_, logreg_line, mlp_line = done.stdout.strip().splitlines()
    logreg, mlp = LOGREG.fullmatch(logreg_line), MLP.fullmatch(mlp_line)
    assert logreg, logreg_line
    assert mlp, mlp_line
    for match in (logreg, mlp):
        ratio, engine_rps, loop_rps, diff = map(float, match.groups()[:4])
        assert engine_rps > 0 and loop_rps > 0
        assert abs(ratio - engine_rps / loop_rps) <= 0.05 * ratio + 0.1
        assert diff <= 1e-4  # the engine reproduces the loop
    assert 0 < float(mlp.group(5)) <= 100


def test_step_speed_prints_a_row_per_problem():
    script = SCRIPT.with_name("step_speed.py")
    done = subprocess.run([sys.executable, str(script), "--steps", "3", "--problems", "rosenbrock,breast_cancer_logreg"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["rosenbrock", "breast_cancer_logreg"]
    assert rows[1].split("|")[2].strip() == "2" and rows[2].split("|")[2].strip() == "31"


def test_step_speed_drop_ins_prints_every_column():
    script = SCRIPT.with_name("step_speed.py")
    done = subprocess.run([sys.executable, str(script), "--drop-ins", "--optimizers", "adam", "--shapes",
                           "50k in 100 tensors", "--repeats", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    header, body = rows[0], rows[1:]
    assert [r[2].strip() for r in body] == ["pytorch", "article", "keras"]
    for r in body:
        assert len(r) == len(header)
        times = [float(c) for i, c in enumerate(r[3:10], 3) if i != 5]  # 5: the first step's seconds (0.0: no compile)
        assert len(times) == 6 and all(t > 0 for t in times) and float(r[5]) >= 0  # torch's three included
        assert r[-1].strip().endswith("x") and r[-2].strip().endswith("x")
    bad = subprocess.run([sys.executable, str(script), "--drop-ins", "--shapes", "1 tensor"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "unknown shape" in bad.stderr


def test_scaling_quick_prints_every_table_with_every_run_done():
    script = SCRIPT.with_name("scaling.py")
    done = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    runs_rows = [r for r in rows if len(r) == 7 and r[0].strip() != "runs R"]
    assert [r[0].strip() for r in runs_rows] == ["1", "8"] * 3
    for r in runs_rows:
        R = r[0].strip()
        assert r[6].strip() == f"{R}/{R}" and float(r[2]) > 0 and float(r[4].replace(",", "")) > 0
    size_rows = [r for r in rows if len(r) == 4 and r[0].strip() != "hidden"]
    assert [r[0].strip() for r in size_rows] == ["64"] and size_rows[0][1].strip() == "4,810"


def test_gemm_libraries_prints_a_row_per_product_with_every_column():
    script = SCRIPT.with_name("gemm_libraries.py")
    done = subprocess.run([sys.executable, str(script), "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    header, body = rows[0], rows[1:]
    assert [h.strip() for h in header[:4]] == ["product", "torch (MKL)", "numpy (OpenBLAS)", "oneDNN"]
    spec = importlib.util.spec_from_file_location("gemm_libraries", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert [r[0].strip() for r in body] == [what for what, *_ in module.SHAPES]
    for r, (_, batch, *_) in zip(body, module.SHAPES):
        assert len(r) == len(header)
        assert float(r[1]) > 0 and float(r[2]) > 0  # torch and numpy have every product
        assert (r[3].strip() == "-") == (batch != 1)  # oneDNN: the unbatched ones only
