import pytest
import torch

from reactkd.models import DoseAwareTeacher
from synthetic_images import regions_like

GRID = (16, 32, 32)




@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return DoseAwareTeacher(feature_size=12, window_size=4).eval()


def test_ct_only_shapes_and_pet_ignored(teacher):
    torch.manual_seed(1)
    images = torch.rand(2, 3, *GRID)
    available = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        out = teacher(images, available, regions_like(images))
        attention = teacher.attention_map()
        other_pet = images.clone()
        other_pet[:, 1:] = torch.rand_like(other_pet[:, 1:])
        again = teacher(other_pet, available.clone().fill_(True), regions_like(other_pet))
    assert teacher.input_modalities == ("ct",)
    assert out.logits.shape == (2, 3)
    assert out.features.shape == (2, 96, 1, 2, 2)
    assert out.branch_available is None
    assert attention.shape == (2, 1, 1, 2, 2)
    assert float(attention.min()) >= 0 and float(attention.max()) <= 1
    torch.testing.assert_close(again.logits, out.logits)
    assert teacher.teacher_available(available).all()


def test_gradient_flows_to_ct(teacher):
    x = torch.rand(1, 3, *GRID, requires_grad=True)
    teacher(x, torch.tensor([[True, False, False]]), regions_like(x)).logits[0, 1].backward()
    assert x.grad[:, 0].abs().sum() > 0
    assert x.grad[:, 1:].abs().sum() == 0


def test_stride_32_keeps_original_swin_output():
    model = DoseAwareTeacher(feature_size=12, window_size=4, feature_stride=32).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32, 32), torch.tensor([[True, False, False]]), regions_like(torch.rand(1, 3, 32, 32, 32)))
    assert out.features.shape == (1, 16 * 12, 1, 1, 1)
