"""scripts/gpu_check.py's CPU-side logic: it lists every test that needs CUDA, its commands
parse, and it stops with one line where no GPU exists (the GPU run itself needs a GPU)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up there
spec.loader.exec_module(gpu_check)


def cuda_test_ids() -> set[str]:
    """``path::name`` of every test function with a decorator that mentions torch.cuda."""
    found = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and any(
                    "torch.cuda" in ast.unparse(d) for d in node.decorator_list):
                found.add(f"tests/{path.name}::{node.name}")
    return found


def test_plan_lists_exactly_the_tests_that_need_cuda():
    needed = cuda_test_ids()
    assert "tests/test_comm_hooks.py::test_nccl_vote_on_cuda_tensors_equals_numpy_vote" in needed
    assert set(gpu_check.CUDA_TESTS) == needed


def test_dry_run_prints_the_commands_without_a_gpu(tmp_path):
    done = subprocess.run([sys.executable, "scripts/gpu_check.py", "--dry-run",
                           "--results-dir", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert all(test in lines[0] for test in gpu_check.CUDA_TESTS)
    assert "bench_signsgd_kernels.py --cuda-only" in lines[1]
    assert not any(tmp_path.iterdir())  # nothing run, nothing written


def test_benchmark_command_of_the_plan_parses_and_runs(monkeypatch, capsys, tmp_path):
    """The benchmark step's arguments as planned (at d = 640), run in this process: without
    CUDA it times nothing and writes its (empty) table; on a GPU it times the CUDA kernels."""
    command = gpu_check.plan(tmp_path, d=640)[1].command
    assert command[1] == "scripts/bench_signsgd_kernels.py"
    spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / command[1])
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(sys, "argv", list(command[1:]))
    assert bench.main() == 0
    assert "results:" in capsys.readouterr().out
    assert list(tmp_path.glob("bench_signsgd_kernels/*/bench_signsgd_kernels.csv"))


def test_without_a_gpu_it_prints_one_line_and_runs_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(gpu_check, "cuda_devices", lambda: [])
    monkeypatch.setattr(gpu_check, "run_step", lambda step: pytest.fail(f"ran {step.name}"))
    assert gpu_check.main(["--results-dir", str(tmp_path)]) == gpu_check.NO_GPU_STATUS
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "no CUDA GPU" in out[0]


def write_junit(path: Path, skipped: bool) -> None:
    case = '<testcase name="test_a"><skipped message="no CUDA"/></testcase>' if skipped else (
        '<testcase name="test_a"/>')
    path.write_text(f'<testsuites><testsuite name="pytest">{case}'
                    '<testcase name="test_b"/></testsuite></testsuites>')


@pytest.mark.parametrize("skipped", [False, True])
def test_a_cuda_test_skipped_on_the_gpu_machine_fails_the_check(monkeypatch, capsys, tmp_path,
                                                                skipped):
    ran = []

    def fake_run(step):
        ran.append(step.name)
        if len(ran) == 1:
            write_junit(tmp_path / "gpu_check_tests.xml", skipped)
        return True, "exit status 0"

    monkeypatch.setattr(gpu_check, "cuda_devices", lambda: ["Fake GPU"])
    monkeypatch.setattr(gpu_check, "run_step", fake_run)
    status = gpu_check.main(["--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert ran == ["CUDA tests", "kernel benchmark on CUDA"]
    assert status == (1 if skipped else 0)
    assert ("skipped on a GPU machine: test_a" in out) == skipped
