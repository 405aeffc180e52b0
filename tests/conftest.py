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
