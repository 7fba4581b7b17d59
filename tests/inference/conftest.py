import pytest

from inference import ChatterboxMultilingualTTS, ChatterboxTTS


@pytest.fixture(scope="module")
def english():
    return ChatterboxTTS.from_preset("tiny")


@pytest.fixture(scope="module")
def multilingual():
    return ChatterboxMultilingualTTS.from_preset()
