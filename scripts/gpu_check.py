"""Every check that needs a CUDA GPU, in one command, in under 5 minutes.

On a machine with one (or more) CUDA GPUs:

1. the tests that are skipped without CUDA (``CUDA_TESTS``): pack / unpack / vote on CUDA
   tensors against the CPU references, the NCCL path of the DDP vote hook, and a signSGD
   worker actor pinned to the GPU. A test that is skipped anyway counts as a failure;
2. ``scripts/bench_signsgd_kernels.py --cuda-only``: the kernels on CUDA tensors, with ratios
   to the GPU's own device-to-device copy, read and write.

Each step runs as a subprocess with its share of the time limit; the script prints one line
per step and exits non-zero if any failed. Where no CUDA GPU is visible it prints one line
saying so and exits with status 2, running nothing.

    python scripts/gpu_check.py              # on the GPU machine
    python scripts/gpu_check.py --dry-run    # anywhere: the commands it would run
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_GPU_STATUS = 2

# Every test that needs CUDA (tests/test_gpu_check.py checks that each test skipped without
# CUDA is listed here, and that each listed test exists).
CUDA_TESTS = (
    "tests/test_signs.py::test_cuda_kernels_match_the_cpu_references",
    "tests/test_comm_hooks.py::test_nccl_vote_on_cuda_tensors_equals_numpy_vote",
    "tests/test_cuda_worker.py::test_worker_actor_pinned_to_the_gpu_trains_on_cuda",
    "tests/test_exchange.py::test_encode_and_decode_on_cuda_equal_the_cpu_path",
)


@dataclass(frozen=True)
class Step:
    """One subprocess: its name, command line and time limit in seconds."""

    name: str
    command: tuple[str, ...]
    timeout_s: float


def plan(results_dir: Path, total_s: float = 285.0, d: int = 25_600_000) -> list[Step]:
    """The steps, in order: the CUDA tests (about 3/5 of ``total_s``), then the benchmark."""
    report = results_dir / "gpu_check_tests.xml"
    tests = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
             "--override-ini=addopts=", f"--junitxml={report}", *CUDA_TESTS)
    bench = (sys.executable, "scripts/bench_signsgd_kernels.py", "--cuda-only", "--d", str(d),
             "--voters", "3", "7", "15", "31", "--repeats", "5",
             "--results-dir", str(results_dir))
    return [Step("CUDA tests", tests, 0.6 * total_s), Step("kernel benchmark on CUDA", bench,
                                                            0.4 * total_s)]


def skipped_tests(junit_xml: Path) -> list[str]:
    """Names of the tests pytest reports as skipped in ``junit_xml``."""
    root = ElementTree.parse(junit_xml).getroot()
    return [case.get("name", "?") for case in root.iter("testcase")
            if case.find("skipped") is not None]


def cuda_devices() -> list[str]:
    """Names of the visible CUDA devices (empty without a GPU or a CUDA build of torch)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def run_step(step: Step) -> tuple[bool, str]:
    """Run ``step`` from the repository root, streaming its output; (passed, reason)."""
    print(f"== {step.name}: {shlex.join(step.command)}", flush=True)
    try:
        done = subprocess.run(step.command, cwd=ROOT, timeout=step.timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {step.timeout_s:.0f} s"
    return done.returncode == 0, f"exit status {done.returncode}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands it would run and exit (no GPU needed)")
    parser.add_argument("--results-dir", default="runs/gpu_check")
    parser.add_argument("--total-s", type=float, default=285.0, help="time limit of all steps")
    args = parser.parse_args(argv)
    results_dir = Path(args.results_dir)
    if not results_dir.is_absolute():
        results_dir = ROOT / results_dir
    steps = plan(results_dir, args.total_s)
    if args.dry_run:
        for step in steps:
            print(f"{step.name} (limit {step.timeout_s:.0f} s): {shlex.join(step.command)}")
        return 0
    devices = cuda_devices()
    if not devices:
        print("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); "
              "nothing was run")
        return NO_GPU_STATUS
    print(f"gpu_check: {len(devices)} CUDA device(s): {', '.join(devices)}", flush=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    started = time.monotonic()
    for step in steps:
        passed, reason = run_step(step)
        if passed and step is steps[0]:
            skipped = skipped_tests(results_dir / "gpu_check_tests.xml")
            if skipped:
                passed, reason = False, f"skipped on a GPU machine: {', '.join(skipped)}"
        print(f"== {step.name}: {'passed' if passed else 'FAILED'} ({reason})", flush=True)
        if not passed:
            failures.append(step.name)
    elapsed = time.monotonic() - started
    print(f"gpu_check: {len(steps) - len(failures)} of {len(steps)} steps passed in "
          f"{elapsed:.0f} s" + (f"; failed: {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
