"""The whole suite runs once per backend: the ``backend`` fixture is parametrised over every
known backend. An unavailable backend is skipped locally, but CI sets
FASTXENT_REQUIRE_BACKENDS so that a backend that fails to build fails the run instead."""

import os

import numpy as np
import pytest

from fastxent import _registry

REQUIRED = [b for b in os.environ.get("FASTXENT_REQUIRE_BACKENDS", "").split(",") if b]


@pytest.fixture(params=_registry.known_backends())
def backend(request):
    name = request.param
    if _registry.load(name) is None:
        if name in REQUIRED:
            pytest.fail(f"backend {name!r} is required here but unavailable: {_registry.why(name)}")
        pytest.skip(f"backend {name!r} unavailable: {_registry.why(name)}")
    return name


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def tol(dtype):
    """(rtol, atol) for comparing a backend to the float64 oracle."""
    return (3e-5, 3e-6) if dtype == np.float32 else (1e-11, 1e-13)
