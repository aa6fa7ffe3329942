"""`make bench`: numbers, not assertions. Medians of several runs on this machine."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable

RUNS = 5
IMPORT_PROGRAM = (
    "import time; t = time.perf_counter(); "
    "import pulumi, pulumi_proxmoxve, pulumi_command, yaml; "
    "print(time.perf_counter() - t)"
)


def median_seconds(run: Callable[[], float], runs: int = RUNS) -> tuple[float, float, float]:
    samples = [run() for _ in range(runs)]
    return statistics.median(samples), min(samples), max(samples)


def import_time() -> float:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROGRAM], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def stack_time(stack: str) -> Callable[[], float]:
    from tools.synth import synthesize

    def run() -> float:
        start = time.perf_counter()
        synthesize(stack)
        return time.perf_counter() - start

    return run


def cold_synth_time(stack: str) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "tools.synth", stack], capture_output=True, check=True
        )
        return time.perf_counter() - start

    return run


def report(label: str, numbers: tuple[float, float, float]) -> None:
    median, low, high = numbers
    print(f"{label:<44} median {median:6.3f} s   (min {low:.3f}, max {high:.3f}, n={RUNS})")


def main() -> None:
    print("smoker-infra benchmark (2-core build machine; ratios are steadier than seconds)")
    report("import program dependencies (fresh process)", median_seconds(import_time))
    stack_time("dev")()  # first evaluation pays the imports; measure the steady state
    for stack in ("dev", "prod"):
        report(f"evaluate stack '{stack}' under mocks", median_seconds(stack_time(stack)))
        report(f"make synth STACK={stack} (fresh process)", median_seconds(cold_synth_time(stack)))


if __name__ == "__main__":
    main()
