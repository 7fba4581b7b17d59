"""The WebSocket's sentence assembler on its own: fragments in, whole sentences out, the character limit."""
from __future__ import annotations

import random

import pytest

from inference.server.sentences import SentenceAssembler, TextTooLong

TEXT = "Hello there. How are you?  Fine; thanks: really!\nIt costs 3.5 euros. 你好。 再见！ The end"


def assemble(fragments: list[str], max_chars: int = 1000) -> list[str]:
    assembler = SentenceAssembler(max_chars)
    return [s for fragment in fragments for s in assembler.add(fragment)] + assembler.end()


def test_a_sentence_comes_out_once_the_space_after_it_arrives():
    assembler = SentenceAssembler(100)
    assert assembler.add("Hello th") == []
    assert assembler.add("ere.") == []  # the end mark alone is not enough: "3." may go on as "3.5"
    assert assembler.add(" How") == ["Hello there."]
    assert assembler.add(" are you? Fine") == ["How are you?"]
    assert assembler.end() == ["Fine"]
    assert assembler.end() == []


def test_every_end_mark_and_only_before_white_space():
    assert assemble([TEXT]) == ["Hello there.", "How are you?", "Fine;", "thanks:", "really!", "It costs 3.5 euros.",
                                "你好。", "再见！", "The end"]


def test_the_rest_is_kept_as_sent_unless_blank():
    assert assemble(["One. ", " two  "]) == ["One.", " two  "]
    assert assemble(["One.  \n "]) == ["One."]
    assert assemble(["   "]) == []


def test_fragmentation_does_not_change_the_sentences():
    """However the text is cut into messages, the same sentences come out (up to the white space around them),
    and none is blank."""
    whole = assemble([TEXT])
    rng = random.Random(0)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(TEXT)), rng.randint(1, 20)))
        fragments = [TEXT[a:b] for a, b in zip([0, *cuts], [*cuts, len(TEXT)])]
        sentences = assemble(fragments)
        assert [s.strip() for s in sentences] == whole, fragments
        assert all(s.strip() for s in sentences)


def test_turbo_tags_stay_whole_however_the_text_arrives():
    """A tag holds letters, spaces and hyphens only, so no sentence end falls inside one; cut across messages it
    comes out whole, in the sentence it belongs to."""
    text = "Hi there [chuckle], one minute? [Clear  throat] Sure. [laugh] Bye!"
    expected = ["Hi there [chuckle], one minute?", "[Clear  throat] Sure.", "[laugh] Bye!"]
    rng = random.Random(1)
    for _ in range(100):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 12)))
        fragments = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        assert [s.strip() for s in assemble(fragments)] == expected, fragments


def test_every_character_counts_towards_the_limit():
    assembler = SentenceAssembler(10)
    assert assembler.add("One. ") == ["One."]
    assembler.add("  ab")
    assembler.add("c")  # 10 characters: still allowed
    with pytest.raises(TextTooLong, match="^text over 10 characters$"):
        assembler.add(" ")
