"""Shared test settings.

The tests use small tensors, for which intra-op threading costs more than it saves on a 2-core machine that may
be running other work: one thread for the whole session (library code never changes the thread count).
Matplotlib draws off-screen.
"""

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
