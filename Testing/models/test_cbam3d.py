import copy

import pytest
import torch

from reactkd.models import CBAM3D


def test_shapes_and_attention_range():
    torch.manual_seed(0)
    cbam = CBAM3D(16, reduction=4)
    x = torch.randn(2, 16, 4, 6, 8)
    y = cbam(x)
    assert y.shape == x.shape
    att = cbam.last_spatial_attention
    assert att.shape == (2, 1, 4, 6, 8)
    assert float(att.min()) >= 0.0 and float(att.max()) <= 1.0
    assert not att.requires_grad
    copy.deepcopy(cbam)  # a stored non-leaf tensor would make this raise


def test_neutral_weights_give_quarter_gain():
    # zero channel-MLP output and zero spatial conv: both sigmoids are 0.5, so the output is x / 4
    cbam = CBAM3D(8, reduction=2)
    torch.nn.init.zeros_(cbam.channel_mlp[2].weight)
    torch.nn.init.zeros_(cbam.channel_mlp[2].bias)
    torch.nn.init.zeros_(cbam.spatial_conv.weight)
    x = torch.randn(3, 8, 5, 5, 5)
    torch.testing.assert_close(cbam(x), x / 4)


def test_spatial_attention_reads_mean_and_max_maps():
    torch.manual_seed(1)
    cbam = CBAM3D(6, reduction=2, spatial_kernel=3)
    with torch.no_grad():
        cbam.spatial_conv.weight.zero_()
        cbam.spatial_conv.weight[0, 0, 1, 1, 1] = 1.0  # centre tap on the channel-mean map
        cbam.spatial_conv.weight[0, 1, 1, 1, 1] = -2.0  # centre tap on the channel-max map
    x = torch.randn(2, 6, 4, 4, 4)
    out = cbam(x)
    scaled = x * cbam.channel_attention(x)
    expected_att = torch.sigmoid(scaled.mean(1, keepdim=True) - 2 * scaled.amax(1, keepdim=True))
    torch.testing.assert_close(cbam.last_spatial_attention, expected_att)
    torch.testing.assert_close(out, scaled * expected_att)


def test_samples_are_independent():
    torch.manual_seed(2)
    cbam = CBAM3D(8)
    x = torch.randn(3, 8, 4, 4, 4)
    torch.testing.assert_close(cbam(x)[1:2], cbam(x[1:2]))


@pytest.mark.parametrize("kwargs", [dict(channels=0), dict(channels=8, reduction=0),
                                    dict(channels=8, spatial_kernel=4)])
def test_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        CBAM3D(**kwargs)
