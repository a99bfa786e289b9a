import pytest
import torch
from monai.visualize import GradCAM

from reactkd.models import GradCamAdapter, StructureFunctionTeacher, Student
from synthetic_images import regions_like

GRID = (16, 32, 32)
#: Parameters that feed only the deepest map (the explained layer's input), not the finer scales the region
#: head pools: a backward from the explained layer must not reach them.
DEEP_ONLY = {"student": ("final_norm.", "encoder.layers.3."),
             "sf_teacher": tuple(f"encoders.{b}.swin.layers{i}" for b in ("fdg", "act") for i in (2, 3, 4))}


def test_adapter_returns_the_models_logits():
    torch.manual_seed(0)
    model = Student(init_filters=8).eval()
    images = torch.rand(2, 3, *GRID)
    available = torch.tensor([True, True, False])
    adapter = GradCamAdapter(model, available, region_labels=regions_like(images))
    assert adapter.cam_layer == "model.cbam"
    with torch.no_grad():
        expected = model(images, available.expand(2, -1), regions_like(images)).logits
        torch.testing.assert_close(adapter(images), expected)
        ct_only = torch.tensor([[True, False, False]] * 2)
        torch.testing.assert_close(adapter(images, available=ct_only), model(images, ct_only, regions_like(images)).logits)
    with pytest.raises(ValueError):
        GradCamAdapter(model, region_labels=regions_like(images))(images)


@pytest.mark.parametrize("build", [lambda: Student(init_filters=8),
                                   lambda: StructureFunctionTeacher(feature_size=12, window_size=4)])
def test_monai_gradcam_gives_input_sized_map(build):
    torch.manual_seed(1)
    model = build()
    model.train()
    images = torch.rand(1, 3, *GRID)
    adapter = GradCamAdapter(model, torch.tensor([[True, True, False]]), region_labels=regions_like(images))
    cam = GradCAM(nn_module=adapter, target_layers=adapter.cam_layer)
    result = cam(images)
    assert result.shape == (1, 1, *GRID)
    assert torch.isfinite(result).all()
    assert float(result.min()) >= 0 and float(result.max()) <= 1
    assert float(result.max() - result.min()) > 0  # a real map, not a constant
    assert model.training  # GradCAM restores the mode it found


@pytest.mark.parametrize("build", [lambda: Student(init_filters=8),
                                   lambda: StructureFunctionTeacher(feature_size=12, window_size=4)])
def test_backward_from_the_cam_layer_gives_the_same_map_without_encoder_gradients(build):
    """The inference path (frozen weights, backward starting at the explained layer's input) must give exactly
    the map of a full backward pass to the input, and the same logits, in one forward."""
    torch.manual_seed(2)
    model = build().eval()
    images = torch.rand(1, 3, *GRID)
    available = torch.tensor([[True, True, False]])
    regions = regions_like(images)
    full = GradCAM(nn_module=GradCamAdapter(model, available, region_labels=regions),
                   target_layers=f"model.{model.cam_layer}")
    expected = full(images.clone().requires_grad_(True))
    for parameter in model.parameters():
        parameter.grad = None

    adapter = GradCamAdapter(model, backward_from_cam_layer=True)
    one_pass = GradCAM(nn_module=adapter, target_layers=adapter.cam_layer)(images, available=available, region_labels=regions)
    torch.testing.assert_close(one_pass, expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(adapter.last_output.logits, model(images, available, regions_like(images)).logits)
    # The backward pass stopped at the explained layer: the head has gradients, the deep encoder none.
    assert model.head.linear.weight.grad is not None
    before_cut = [p for name, p in model.named_parameters() if name.startswith(DEEP_ONLY[model.architecture])]
    assert before_cut and all(p.grad is None for p in before_cut)

    for parameter in model.parameters():
        parameter.requires_grad_(False)  # as in a loaded package
    frozen = GradCAM(nn_module=adapter, target_layers=adapter.cam_layer)(images, available=available, region_labels=regions)
    torch.testing.assert_close(frozen, expected, rtol=0, atol=1e-6)

    # Without the cut, frozen weights and an input that needs no grad leave nothing to differentiate.
    adapter.remove_hooks()
    with pytest.raises(RuntimeError):
        GradCAM(nn_module=adapter, target_layers=adapter.cam_layer)(images, available=available, region_labels=regions)
