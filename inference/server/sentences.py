"""Text that arrives in fragments (a language model's tokens, a user typing) -> whole sentences to synthesise.

The WebSocket starts a request per sentence as soon as the sentence is complete, so speech begins while later
text still arrives; a sentence ends at . ! ? ; : (and their CJK forms) followed by white space.
"""
from __future__ import annotations

import re

SENTENCE_END = re.compile(r"(?<=[.!?;:。！？])\s+")


class TextTooLong(ValueError):
    """The client sent more text in one stream than the server takes."""


class SentenceAssembler:
    """Collects fragments and gives back each sentence once it is complete; `end` gives the rest.

    Every fragment counts towards `max_chars` (white space included), so a stream is limited as a request of the
    same text would be. A sentence is never blank: a boundary follows punctuation and precedes non-space."""

    def __init__(self, max_chars: int):
        self.max_chars = max_chars
        self.chars = 0
        self.buffer = ""

    def add(self, fragment: str) -> list[str]:
        """The sentences `fragment` completes (often none); TextTooLong once the stream passes `max_chars`."""
        self.chars += len(fragment)
        if self.chars > self.max_chars:
            raise TextTooLong(f"text over {self.max_chars} characters")
        self.buffer += fragment
        *done, self.buffer = SENTENCE_END.split(self.buffer)
        return done

    def end(self) -> list[str]:
        """What is left when the client ends the stream, as a last sentence unless it is only white space."""
        rest, self.buffer = self.buffer, ""
        return [rest] if rest.strip() else []
