"""Shared fixtures for the core tests."""

import pytest

from synthetic_images import make_case


@pytest.fixture
def small_case():
    return make_case()
