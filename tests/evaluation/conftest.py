"""The scoring models, loaded once per session: the recipe's tests, the similarity tests and the quality tests
read them and never change them (each is a pure function of its input once loaded)."""
import pytest

from evaluation.quality import DnsMos
from evaluation.similarity import SpeakerSimilarity
from inference.asr import BUNDLED_BASE, Asr, TranscribeConfig


@pytest.fixture(scope="module", autouse=True)
def offline():
    """A model name slipping through must fail at once rather than reach for the network."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def whisper_base() -> Asr:
    """The evaluation's default ASR (Whisper base, bundled), for English: what `evaluate` would load."""
    return Asr(TranscribeConfig(model=BUNDLED_BASE), language="en")


@pytest.fixture(scope="session")
def similarity() -> SpeakerSimilarity:
    pytest.importorskip("resemblyzer")
    return SpeakerSimilarity()


@pytest.fixture(scope="session")
def dnsmos() -> DnsMos:
    return DnsMos()
