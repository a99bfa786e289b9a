"""Model tests run with one intra-op thread: the test machine has 2 shared cores, and several threads only
fight each other there."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
