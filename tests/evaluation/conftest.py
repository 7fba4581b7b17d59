"""The scoring models, loaded once per session: the recipe's tests, the similarity tests and the quality tests
read them and never change them (each is a pure function of its input once loaded)."""
import pytest

from evaluation.quality import DnsMos
from evaluation.similarity import SpeakerSimilarity
from inference.asr import BUNDLED_BASE, Asr, TranscribeConfig


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
