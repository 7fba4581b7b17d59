import pytest

from inference import ChatterboxMultilingualTTS, ChatterboxTTS

# Each preset holds a full-size synthetic S3Gen (~1 GB, several seconds to build): one of each per session.
# Tests must leave them as they found them (restore `conds` after preparing another voice).


@pytest.fixture(scope="session")
def english():
    return ChatterboxTTS.from_preset("tiny")


@pytest.fixture(scope="session")
def multilingual():
    return ChatterboxMultilingualTTS.from_preset()
