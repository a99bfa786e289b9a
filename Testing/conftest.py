"""Shared fixtures for the core tests; the hypothesis profile for `make fuzz` (registered here, at the top
level, so `pytest Testing -m fuzz --hypothesis-profile=long` finds it before any test module loads)."""

import pytest
from hypothesis import HealthCheck, settings

from synthetic_images import make_case

settings.register_profile("long", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture
def small_case():
    return make_case()
