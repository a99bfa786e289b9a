import pytest
import torch
from monai.visualize import GradCAM

from reactkd.models import GradCamAdapter, StructureFunctionTeacher, Student

GRID = (16, 32, 32)




def test_adapter_returns_the_models_logits():
    torch.manual_seed(0)
    model = Student(init_filters=8).eval()
    images = torch.rand(2, 3, *GRID)
    available = torch.tensor([True, True, False])
    adapter = GradCamAdapter(model, available)
    assert adapter.cam_layer == "model.cbam"
    with torch.no_grad():
        expected = model(images, available.expand(2, -1)).logits
        torch.testing.assert_close(adapter(images), expected)
        ct_only = torch.tensor([[True, False, False]] * 2)
        torch.testing.assert_close(adapter(images, available=ct_only), model(images, ct_only).logits)
    with pytest.raises(ValueError):
        GradCamAdapter(model)(images)


@pytest.mark.parametrize("build", [lambda: Student(init_filters=8),
                                   lambda: StructureFunctionTeacher(feature_size=12, window_size=4)])
def test_monai_gradcam_gives_input_sized_map(build):
    torch.manual_seed(1)
    model = build()
    model.train()
    adapter = GradCamAdapter(model, torch.tensor([[True, True, False]]))
    cam = GradCAM(nn_module=adapter, target_layers=adapter.cam_layer)
    images = torch.rand(1, 3, *GRID)
    result = cam(images)
    assert result.shape == (1, 1, *GRID)
    assert torch.isfinite(result).all()
    assert float(result.min()) >= 0 and float(result.max()) <= 1
    assert float(result.max() - result.min()) > 0  # a real map, not a constant
    assert model.training  # GradCAM restores the mode it found
