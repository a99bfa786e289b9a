import pytest
import torch

from reactkd.devices import single_cpu_thread


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_single_cpu_thread_limits_and_restores(two_threads):
    with single_cpu_thread(torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError), single_cpu_thread(torch.device("cpu")):
        raise ValueError("the count is restored on errors too")
    assert torch.get_num_threads() == 2


def test_single_cpu_thread_leaves_cuda_work_alone(two_threads):
    with single_cpu_thread(torch.device("cuda")):  # only the device type is read: no GPU needed
        assert torch.get_num_threads() == 2

