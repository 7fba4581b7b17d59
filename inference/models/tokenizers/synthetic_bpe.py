"""A small GPT-2-style byte-level BPE tokenizer for the Turbo/Nano presets and tests.

The official Turbo tokenizer (GPT-2's 50,257 entries plus added tags) cannot be downloaded here. This one has the
same shape: byte-level BPE merges learned offline from a fixed English text below, GPT-2's `<|endoftext|>` as eos,
and the nine paralinguistic tags upstream names as added tokens. It is saved and read back through
`transformers.AutoTokenizer` exactly like the official files, so every code path of the real tokenizer runs.
"""
from __future__ import annotations

import json
from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .turbo import EOS, UPSTREAM_TAGS, BpeTokenizer

# A ceiling only: the text below runs out of pairs first (every word of it ends as one token; ~1.3k entries).
MAX_VOCAB = 4096

# Written for this purpose: everyday English with numbers, names and punctuation, so that common words, spaces
# before words and sentence ends all get merges of their own.
CORPUS = """\
The morning train left the station a little after seven, and most of the people on board were still half asleep.
She opened the window, looked at the grey sky and decided that the walk to the office could wait for another day.
Our team has finished the report, but we still need two more weeks to check every number in it.
Could you please send me the address of the new restaurant? I would like to book a table for four people.
When the power went out, the whole street turned quiet, and somebody started to play the guitar in the dark.
It is not easy to explain why the river floods every spring; the engineers have been arguing about it for years.
He said, "Don't worry about the price. We'll find a way to pay for it together."
The museum opens at nine o'clock on weekdays and at ten on Saturdays and Sundays.
A good teacher listens first, asks simple questions, and only then tries to give an answer.
My grandmother kept a small garden behind the house, full of tomatoes, beans, onions and bright yellow flowers.
Thank you for calling. Your call is important to us, and an agent will be with you shortly.
In 2024 the company sold 3,500 bicycles, which was almost twice as many as in the year before.
Turn left at the second light, drive past the school, and the hospital will be on your right.
The children laughed when the dog jumped into the lake and came back with a stick that was far too big.
I think we should leave early tomorrow, because the weather report says there will be heavy snow after lunch.
Every evening the old fisherman mended his nets and told stories about storms he had seen at sea.
Please remember to switch off the lights, lock the door and put the keys under the flower pot.
The meeting has been moved from Tuesday to Thursday afternoon, at half past three.
Science is a way of asking careful questions and being honest about what we do not know yet.
They walked along the beach for hours, talking about music, books, friends and the places they wanted to visit.
Wait, what did you just say? I didn't hear the last part of your sentence.
Oh, that's wonderful news! Congratulations to both of you, and welcome to the family.
The recipe needs two cups of flour, one egg, a spoon of sugar and a pinch of salt.
Nobody expected the small village team to win the final, but they played the game of their lives.
Hello, my name is Anna, and I will be your guide through the old part of the city today.
Scientists measured the temperature of the water every hour during the whole month of August.
If you have any questions about your order, write to our support team and include the order number.
The library was warm and silent, except for the sound of pages turning and rain against the glass.
Let me think about it for a moment... yes, I believe that is the right answer.
After the concert, the musicians packed their instruments and drove through the night to the next town.
Some people prefer coffee in the morning, while others cannot start the day without a cup of tea.
The new bridge will connect the two parts of the city and should be ready by the end of next year.
Could you speak a bit more slowly, please? My English is good, but this is a difficult topic for me.
Why does the sky look blue during the day and red when the sun goes down in the evening?
We are sorry for the delay; the next bus to the airport leaves in about fifteen minutes.
The doctor told him to rest, drink plenty of water and come back if the fever did not go away.
Learning a new language takes time, patience and a lot of practice, especially speaking and listening.
At the top of the mountain the air was cold and clear, and we could see three lakes below us.
Her voice was calm and warm, and everyone in the room stopped talking to listen to her story.
First, open the box carefully. Second, take out the parts. Third, read the instructions before you begin.
Honestly, I have no idea how the cat got onto the roof, but it seems very happy up there.
The price of bread, milk and eggs went up again this week, and many families are worried.
Tomorrow will be sunny in the north, with clouds and light rain moving in from the west later in the day.
He picked up the phone, listened for a second, and then smiled for the first time that day.
Do you remember the name of the song that was playing when we first met? I can't stop thinking about it.
One hundred and twenty-five students took the exam, and nearly all of them passed.
The painting shows a quiet harbour at sunset, with small boats resting on the golden water.
Excuse me, is this seat taken? No? Great, thank you very much.
You can't always get what you want, but sometimes you find that you already have what you need.
Ladies and gentlemen, the show will begin in five minutes. Please take your seats and turn off your phones.
"""


@lru_cache(maxsize=1)
def _learned() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    """Vocabulary and merges learned from CORPUS, once per process (the trainer is deterministic; tests check it)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=MAX_VOCAB, min_frequency=1, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    spec = json.loads(tok.to_str())["model"]
    vocab = tuple(sorted(spec["vocab"].items(), key=lambda kv: kv[1]))
    merges = tuple((m.split(" ", 1) if isinstance(m, str) else m) for m in spec["merges"])  # both JSON spellings
    return vocab, tuple(tuple(m) for m in merges)


def synthetic_bpe_tokenizer() -> BpeTokenizer:
    """A fresh tokenizer (callers may change it) with the same ids on every build and in every process."""
    from transformers import GPT2Tokenizer

    vocab, merges = _learned()
    hf = GPT2Tokenizer(vocab=dict(vocab), merges=list(merges), eos_token=EOS, bos_token=EOS, unk_token=EOS)
    hf.add_tokens(list(UPSTREAM_TAGS))
    return BpeTokenizer(hf)
