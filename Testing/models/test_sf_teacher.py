import pytest
import torch

from reactkd.errors import GeometryError
from reactkd.models import CBAM3D, StructureFunctionTeacher
from synthetic_images import regions_like

GRID = (16, 32, 32)
# rows: FDG only, ACT only, both, neither (CT only)
AVAILABLE = torch.tensor([[1, 1, 0], [1, 0, 1], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)




@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return StructureFunctionTeacher(feature_size=12, window_size=4, n_classes=3).eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(len(AVAILABLE), 3, *GRID) * AVAILABLE[:, :, None, None, None]


@pytest.fixture(scope="module")
def output(teacher, images):
    with torch.no_grad():
        out = teacher(images, AVAILABLE, regions_like(images))
        attention = teacher.attention_map()
    return out, attention


def test_shapes_and_branch_flags(output, teacher):
    out, attention = output
    channels = 8 * 12
    assert out.logits.shape == (4, 3)
    assert out.features.shape == (4, channels, 1, 2, 2)
    assert torch.equal(out.branch_available, torch.tensor([[1, 0], [0, 1], [1, 1], [1, 1]], dtype=torch.bool))
    assert torch.equal(teacher.teacher_available(AVAILABLE), torch.tensor([True, True, True, False]))
    assert attention.shape == (4, 1, 1, 2, 2)
    assert float(attention.min()) >= 0 and float(attention.max()) <= 1
    assert torch.isfinite(out.logits).all()


def test_absent_channel_content_is_ignored_per_sample(teacher, images, output):
    noisy = images.clone()
    absent = ~AVAILABLE
    noisy[absent] = torch.rand_like(noisy[absent]) * 5
    noisy[0, 2, 0, 0, 0] = float("nan")  # even NaN in an absent channel must not leak
    with torch.no_grad():
        again = teacher(noisy, AVAILABLE, regions_like(noisy))
    torch.testing.assert_close(again.logits, output[0].logits)
    torch.testing.assert_close(again.features, output[0].features)


def test_present_channel_content_matters(teacher, images, output):
    changed = images.clone()
    changed[0, 1] = torch.rand_like(changed[0, 1])  # FDG of the FDG-only sample
    changed[1, 2] = torch.rand_like(changed[1, 2])  # ACT of the ACT-only sample
    with torch.no_grad():
        again = teacher(changed, AVAILABLE, regions_like(changed)).logits
    assert not torch.allclose(again[0], output[0].logits[0])
    assert not torch.allclose(again[1], output[0].logits[1])
    torch.testing.assert_close(again[2:], output[0].logits[2:])


def test_sample_result_does_not_depend_on_batch_mates(teacher, images, output):
    with torch.no_grad():
        alone = teacher(images[1:2], AVAILABLE[1:2], regions_like(images[1:2])).logits
    torch.testing.assert_close(alone, output[0].logits[1:2], rtol=1e-4, atol=1e-5)


def test_one_cbam_serves_both_branches(images):
    torch.manual_seed(3)
    model = StructureFunctionTeacher(feature_size=12, window_size=4).eval()
    cbams = [m for m in model.modules() if isinstance(m, CBAM3D)]
    assert cbams == [model.cbam]
    seen = []
    model.cbam.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    with torch.no_grad():
        before = model(images[:2], AVAILABLE[:2], regions_like(images[:2])).logits
        model.cbam.spatial_conv.weight.mul_(-3.0)
        after = model(images[:2], AVAILABLE[:2], regions_like(images[:2])).logits
    assert seen == [4, 4]  # called once per forward on both branches stacked (2 samples x 2 branches)
    # the FDG-only and the ACT-only sample both react to the one CBAM's weights
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])


def test_attention_is_mean_over_available_branches(teacher, images):
    with torch.no_grad():
        teacher(images, AVAILABLE, regions_like(images))
    per_branch = teacher.cbam.last_spatial_attention.chunk(2, dim=0)
    attention = teacher.attention_map()
    torch.testing.assert_close(attention[0], per_branch[0][0])
    torch.testing.assert_close(attention[1], per_branch[1][1])
    torch.testing.assert_close(attention[2], (per_branch[0][2] + per_branch[1][2]) / 2)


def test_gradient_reaches_present_channels_only(teacher, images):
    x = images[:2].clone().requires_grad_(True)
    teacher(x, AVAILABLE[:2], regions_like(x)).logits.sum().backward()
    grad_mass = x.grad.abs().sum(dim=(2, 3, 4))
    assert (grad_mass[AVAILABLE[:2]] > 0).all()
    assert (grad_mass[~AVAILABLE[:2]] == 0).all()


def test_rejects_grid_not_divisible_and_bad_flags(teacher):
    with pytest.raises(GeometryError):
        teacher(torch.zeros(1, 3, 24, 32, 32), AVAILABLE[:1], regions_like(torch.zeros(1, 3, 24, 32, 32)))
    with pytest.raises(ValueError):
        teacher(torch.zeros(1, 3, *GRID), AVAILABLE[:1].int(), regions_like(torch.zeros(1, 3, *GRID)))
    with pytest.raises(RuntimeError):
        StructureFunctionTeacher(feature_size=12, window_size=4).attention_map()
