import pytest
import torch

from reactkd.models import GradCamAdapter, StructureFunctionTeacher, Student
from reactkd.models.gradcam import grad_cam
from synthetic_images import regions_like

GRID = (16, 32, 32)


def test_adapter_returns_the_models_logits():
    torch.manual_seed(0)
    model = Student(init_filters=8).eval()
    images = torch.rand(2, 3, *GRID)
    available = torch.tensor([True, True, False])
    adapter = GradCamAdapter(model, available, region_labels=regions_like(images))
    assert adapter.cam_layer == "model.input_layer"
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
    cam = grad_cam(adapter)
    # An untrained network may have no positive evidence for one class (Grad-CAM's ReLU then gives zeros),
    # never for all three.
    results = [cam(images, class_idx=index).detach() for index in range(3)]
    for result in results:
        assert result.shape == (1, 1, *GRID)
        assert torch.isfinite(result).all()
        assert float(result.min()) >= 0
    assert max(float(r.max() - r.min()) for r in results) > 0  # a real map, not a constant
    assert model.training  # GradCAM restores the mode it found


@pytest.mark.parametrize("build", [lambda: Student(init_filters=8),
                                   lambda: StructureFunctionTeacher(feature_size=12, window_size=4)])
def test_backward_from_the_cam_layer_gives_the_same_map_in_one_pass(build):
    """The inference path (frozen weights, backward starting at the explained layer's input) must give exactly
    the map of a full backward pass to the input, and the same logits, in one forward."""
    torch.manual_seed(2)
    model = build().eval()
    images = torch.rand(1, 3, *GRID)
    available = torch.tensor([[True, True, False]])
    regions = regions_like(images)
    expected = grad_cam(GradCamAdapter(model, available, region_labels=regions))(images.clone().requires_grad_(True))
    for parameter in model.parameters():
        parameter.grad = None

    adapter = GradCamAdapter(model, backward_from_cam_layer=True)
    one_pass = grad_cam(adapter)(images, available=available, region_labels=regions)
    torch.testing.assert_close(one_pass, expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(adapter.last_output.logits, model(images, available, regions_like(images)).logits)

    for parameter in model.parameters():
        parameter.requires_grad_(False)  # as in a loaded package
    frozen = grad_cam(adapter)(images, available=available, region_labels=regions)
    torch.testing.assert_close(frozen, expected, rtol=0, atol=1e-6)

    # Without the cut too: the adapter makes the input a leaf, so frozen weights still give the map.
    adapter.remove_hooks()
    torch.testing.assert_close(grad_cam(adapter)(images, available=available, region_labels=regions), expected,
                               rtol=0, atol=1e-6)


def test_the_map_is_gradient_times_liver_referenced_input_and_is_not_flipped():
    """HiResCAM at the explained layer, computed by hand with autograd: high where the evidence is high.
    (MONAI's default post-processing would flip it: min -> 1, max -> 0.)"""
    torch.manual_seed(3)
    model = Student(init_filters=8).eval()
    images, available = torch.rand(1, 3, *GRID), torch.tensor([[True, False, False]])
    regions = regions_like(images)
    captured = {}

    def keep(_module, _args, output):
        output.retain_grad()
        captured["layer"] = output

    hook = model.input_layer.register_forward_hook(keep)
    logits = model(images.clone().requires_grad_(True), available, regions).logits
    hook.remove()
    logits[0, int(logits.argmax())].backward()
    layer = captured["layer"]
    by_hand = torch.relu((layer * layer.grad).sum(1, keepdim=True))
    for parameter in model.parameters():
        parameter.grad = None
    mapped = grad_cam(GradCamAdapter(model, available, region_labels=regions))(images).detach()
    torch.testing.assert_close(mapped, by_hand, rtol=1e-4, atol=1e-6)
    assert float(mapped.max()) > 0
