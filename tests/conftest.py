import pytest

from inference import ChatterboxMultilingualTTS, ChatterboxTTS, ChatterboxTurboTTS

@pytest.fixture(scope="session", autouse=True)
def offline():
    """Nothing here may reach for the network (none is reachable): a model name slipping through must fail at
    once. Subprocesses the tests start inherit it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


# Each preset holds a full-size synthetic S3Gen (~1 GB, several seconds to build): one of each per session.
# Tests must leave them as they found them (restore `conds` after preparing another voice).


@pytest.fixture(scope="session")
def english():
    return ChatterboxTTS.from_preset("tiny")


@pytest.fixture(scope="session")
def multilingual():
    return ChatterboxMultilingualTTS.from_preset()


@pytest.fixture(scope="session")
def turbo():
    return ChatterboxTurboTTS.from_preset()
