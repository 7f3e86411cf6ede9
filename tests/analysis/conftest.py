"""Fixtures of the analysis-job tests (helpers live in eager_reference.py)."""
import pytest

from eager_reference import EagerReference, tiny_model


@pytest.fixture(scope="session")
def model():
    return tiny_model()


@pytest.fixture(scope="session")
def reference(model):
    return EagerReference(model)
