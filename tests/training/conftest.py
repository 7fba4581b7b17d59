import pytest


@pytest.fixture(scope="module", autouse=True)
def offline():
    """A model name slipping through must fail at once rather than reach for the network."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield
