"""The tokenizer never fails on any text and round-trips text of its own alphabet."""

from hypothesis import given, settings
from hypothesis import strategies as st

from transformer.config import TokenizerConfig
from transformer.demo_corpus import demo_corpus
from transformer.tokenizer import Tokenizer

# A small tokenizer trained on the demo corpus (whose alphabet covers the round-trip test's).
TOKENIZER = Tokenizer.train(
    [s for pair in demo_corpus(500, 5, 5, seed=3)["train"] for s in pair], TokenizerConfig(vocab_size=200)
)


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_tokenizer_never_fails_and_stays_in_vocabulary(text):
    ids = TOKENIZER.encode([text])[0]
    assert all(0 <= i < TOKENIZER.vocab_size for i in ids)
    assert isinstance(TOKENIZER.decode([ids])[0], str)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="abcdefghilmnoprstuv .", max_size=60))
def test_tokenizer_round_trips_text_of_its_own_alphabet(text):
    assert TOKENIZER.decode(TOKENIZER.encode([text]))[0] == " ".join(text.split())
