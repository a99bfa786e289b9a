import json

import pytest
import torch

from reactkd.errors import ConfigError
from reactkd.models import ARCHITECTURES, ReactKDModel, build_model
from reactkd.vocabulary import MODALITIES
from synthetic_images import regions_like

TINY = {
    "sf_teacher": dict(feature_size=12, window_size=4, depths=(1, 1, 1, 1)),
    "dose_teacher": dict(feature_size=12, window_size=4, depths=(1, 1, 1, 1)),
    "student": dict(init_filters=8, blocks_down=(1, 1, 1, 1)),
}




def test_registry_names():
    assert set(ARCHITECTURES) == {"sf_teacher", "dose_teacher", "student"}


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_config_round_trips_through_json(architecture):
    model = build_model(architecture, **TINY[architecture])
    assert isinstance(model, ReactKDModel) and model.architecture == architecture
    assert set(model.input_modalities) <= set(MODALITIES) and model.input_modalities[0] == "ct"
    assert dict(model.named_modules())[model.cam_layer] is not None
    config = json.loads(json.dumps(model.config))
    assert config == model.config
    rebuilt = build_model(architecture, **config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}
    rebuilt.load_state_dict(model.state_dict())
    images = torch.rand(1, 3, 16, 16, 16)
    available = torch.tensor([[True, True, True]])
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images, available, regions_like(images)).logits, model(images, available, regions_like(images)).logits)


def test_bad_names_and_settings_raise_config_error():
    with pytest.raises(ConfigError, match="unknown architecture"):
        build_model("resnet")
    with pytest.raises(ConfigError, match="student"):
        build_model("student", feature_size=48)
    with pytest.raises(ConfigError):
        build_model("student", in_channels=5)
