"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: real-browser tests of the demo page (headless chromium; .ci/web.sh installs it)")


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread, then restore the previous count.

    The core tests run many small tensor ops; on a small, busy machine two threads spend more
    time synchronising than computing. Bits never depend on the thread count (tests that
    check that set the count themselves).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
