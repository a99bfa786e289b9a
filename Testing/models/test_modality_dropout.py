import pytest
import torch

from reactkd.models import apply_modality_dropout


def full_batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 1, 2, 2, generator=g) + 0.5  # strictly positive, so zeros mean dropped
    return images, torch.ones(n, 3, dtype=torch.bool)


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_drop_rate_and_independence(p):
    n = 20000
    images, available = full_batch(n)
    dropped_images, dropped = apply_modality_dropout(images, available, p=p,
                                                     generator=torch.Generator().manual_seed(1))
    assert dropped[:, 0].all()  # CT never dropped
    rates = (~dropped[:, 1:]).float().mean(dim=0)
    tolerance = 5 * (p * (1 - p) / n) ** 0.5
    assert torch.all((rates - p).abs() < tolerance)
    both = (~dropped[:, 1] & ~dropped[:, 2]).float().mean()
    assert abs(float(both) - p * p) < tolerance  # modalities drawn independently
    # images follow the flags exactly: dropped channels zero, the others unchanged
    keep = dropped[:, :, None, None, None].expand_as(images)
    assert torch.equal(dropped_images[keep], images[keep])
    assert (dropped_images[~keep] == 0).all()


def test_inputs_untouched_and_absent_stays_absent():
    images, available = full_batch(64)
    available[::2, 1] = False
    images[::2, 1] = 0
    images_before, available_before = images.clone(), available.clone()
    out_images, out_available = apply_modality_dropout(images, available, p=0.5,
                                                       generator=torch.Generator().manual_seed(2))
    assert torch.equal(images, images_before) and torch.equal(available, available_before)
    assert out_images.data_ptr() != images.data_ptr() and out_available.data_ptr() != available.data_ptr()
    assert not out_available[::2, 1].any()
    assert not (out_available & ~available).any()


def test_deterministic_with_generator():
    images, available = full_batch(256)
    a = apply_modality_dropout(images, available, generator=torch.Generator().manual_seed(7))
    b = apply_modality_dropout(images, available, generator=torch.Generator().manual_seed(7))
    c = apply_modality_dropout(images, available, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_edge_probabilities_and_validation():
    images, available = full_batch(32)
    _, kept = apply_modality_dropout(images, available, p=0.0)
    _, gone = apply_modality_dropout(images, available, p=1.0)
    assert kept.all()
    assert gone[:, 0].all() and not gone[:, 1:].any()
    with pytest.raises(ValueError):
        apply_modality_dropout(images, available, p=1.5)
    with pytest.raises(ValueError):
        apply_modality_dropout(images[:, :2], available[:, :2])


@pytest.mark.parametrize("share, p", [(0.5, 0.3), (0.8, 0.0)])
def test_ct_only_share_gives_at_least_that_share_of_ct_alone(share, p):
    n = 20000
    images, available = full_batch(n)
    _, dropped = apply_modality_dropout(images, available, p=p, generator=torch.Generator().manual_seed(2),
                                        ct_only_share=share)
    ct_alone = (~dropped[:, 1:].any(dim=1)).float().mean()
    expected = share + (1 - share) * p * p  # forced, or both PETs dropped independently
    assert abs(float(ct_alone) - expected) < 5 * (expected * (1 - expected) / n) ** 0.5


def test_ct_only_share_zero_keeps_the_random_stream():
    images, available = full_batch(64)
    first = apply_modality_dropout(images, available, 0.3, torch.Generator().manual_seed(3))
    second = apply_modality_dropout(images, available, 0.3, torch.Generator().manual_seed(3), ct_only_share=0.0)
    assert torch.equal(first[1], second[1])
    with pytest.raises(ValueError, match="CT-only share"):
        apply_modality_dropout(images, available, 0.3, ct_only_share=1.5)
