"""Shared fixtures. Keep this small: helpers specific to one area live in its test module."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Property tests call native code whose first call may start a thread pool: no deadlines.
settings.register_profile(
    "negmine",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("negmine")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: tests are reproducible run to run."""
    return np.random.default_rng(20240601)
