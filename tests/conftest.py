"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a module on one intra-op torch thread, and restore the setting afterwards.

    The CI machine has 2 cores, often shared: the small convolutions of the tests gain little from a second
    thread, and spin-waiting OpenMP threads on a busy machine measured up to 60x the CPU time of one thread.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``. Bundle configs may still set their
    own thread count (``cpu_threads``) while they run.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_report_header(config: pytest.Config) -> str:
    """Say up front whether this CPU runs the bf16 tests (they skip without oneDNN bf16 kernels)."""
    from common.training.cpu import bf16_support

    s = bf16_support()
    runs = "run" if s["mkldnn_bf16"] else "are skipped"
    return f"bf16 on this CPU: oneDNN kernels {s['mkldnn_bf16']}, native {s['native']} (the bf16 tests {runs})"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """List every skipped test with its reason (hardware the machine lacks), even without ``pytest -rs``."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped or "s" in terminalreporter.reportchars.lower():
        return  # nothing skipped, or pytest's own short summary already lists them
    terminalreporter.section("skipped tests")
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        terminalreporter.line(f"SKIPPED {report.nodeid}: {reason.removeprefix('Skipped: ')}")
