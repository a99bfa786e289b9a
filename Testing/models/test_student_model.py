import pytest
import torch

from reactkd.models import Student
from synthetic_images import regions_like

GRID = (16, 32, 32)
CT_ONLY = torch.tensor([[True, False, False]])




@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return Student(init_filters=8).eval()


def test_default_student_fits_parameter_budget():
    with torch.device("meta"):  # counts parameters without allocating them
        model = Student()
    n_parameters = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < n_parameters <= 3_000_000
    assert model.out_channels == 128


def test_ct_only_forward(student):
    torch.manual_seed(1)
    images = torch.zeros(2, 3, *GRID)
    images[:, 0] = torch.rand(2, *GRID)
    with torch.no_grad():
        out = student(images, CT_ONLY.expand(2, -1), regions_like(images))
        attention = student.attention_map()
    assert out.logits.shape == (2, 3)
    assert out.features.shape == (2, 64, 2, 4, 4)
    assert attention.shape == (2, 1, 2, 4, 4)
    assert float(attention.min()) >= 0 and float(attention.max()) <= 1
    assert torch.isfinite(out.logits).all()


def test_absent_channels_ignored_and_flags_used(student):
    torch.manual_seed(2)
    images = torch.rand(3, 3, *GRID)
    available = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    noisy = images.clone()
    noisy[~available] = torch.randn_like(noisy[~available]) * 10
    noisy[0, 1, 0, 0, 0] = float("nan")
    with torch.no_grad():
        reference = student(images, available, regions_like(images)).logits
        with_noise = student(noisy, available, regions_like(noisy)).logits
        present = student(images, available.clone().fill_(True), regions_like(images)).logits
        zeros_flagged_present = student(images * available[:, :, None, None, None], torch.ones_like(available), regions_like(images * available[:, :, None, None, None])).logits
    torch.testing.assert_close(with_noise, reference)
    assert not torch.allclose(present, reference)
    # same (zero) channel content, only the flags differ: the flags themselves reach the network
    assert not torch.allclose(zeros_flagged_present[0], reference[0])


def test_ct_only_student_ignores_pet():
    torch.manual_seed(3)
    model = Student(in_channels=1, init_filters=8).eval()
    images = torch.rand(1, 3, *GRID)
    with torch.no_grad():
        a = model(images, torch.ones(1, 3, dtype=torch.bool), regions_like(images)).logits
        images[:, 1:] = torch.rand_like(images[:, 1:])
        b = model(images, torch.ones(1, 3, dtype=torch.bool), regions_like(images)).logits
    assert model.input_modalities == ("ct",)
    torch.testing.assert_close(a, b)


def test_gradient_flows_to_input(student):
    x = torch.rand(1, 3, *GRID, requires_grad=True)
    student(x, torch.tensor([[True, True, False]]), regions_like(x)).logits[0, 0].backward()
    per_channel = x.grad.abs().sum(dim=(0, 2, 3, 4))
    assert per_channel[0] > 0 and per_channel[1] > 0 and per_channel[2] == 0


def test_channels_last_3d_gives_same_result(student):
    torch.manual_seed(4)
    images = torch.rand(2, 3, *GRID)
    available = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        reference = student(images, available, regions_like(images)).logits
        channels_last = student(images.to(memory_format=torch.channels_last_3d), available, regions_like(images.to(memory_format=torch.channels_last_3d))).logits
    torch.testing.assert_close(channels_last, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(in_channels=4), dict(init_filters=12), dict(n_classes=1)])
def test_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        Student(**kwargs)
