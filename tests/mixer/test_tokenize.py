"""Tokenizer and keyword matching."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from xserve.mixer.tokenize import KeywordMatcher, tokenize


def test_tokens_are_casefolded_nfkc_words():
    assert tokenize("Hello, WORLD! It's ＦＵＬＬ-width #tags @me 2026") == [
        "hello", "world", "it's", "full", "width", "tags", "me", "2026",
    ]
    assert tokenize("Straße ΣΊΣΥΦΟΣ") == ["strasse", "σίσυφοσ"]


def test_keyword_matches_contiguous_token_runs_only():
    m = KeywordMatcher(["New York", "  ", "🙂"])  # keywords without word tokens are ignored
    assert m.matches("the new york times") and m.matches("NEW-YORK")
    assert not m.matches("newyork") and not m.matches("york new") and not m.matches("new jersey, york")
    assert not KeywordMatcher(["york"]).matches("yorkshire")
    assert not KeywordMatcher([]) and not KeywordMatcher(["!!"])


@given(st.lists(st.sampled_from(["a", "b", "Ab", "ß", "ss", "x"]), min_size=1, max_size=8), st.data())
def test_any_contiguous_slice_of_the_text_matches(words, data):
    i = data.draw(st.integers(0, len(words) - 1))
    j = data.draw(st.integers(i + 1, len(words)))
    text = " ".join(words)
    assert KeywordMatcher([" ".join(words[i:j]).upper()]).matches(text)


def reference_matches(keywords: list[str], text: str) -> bool:
    """Token-run search without the substring pre-check (oracle for KeywordMatcher)."""
    tokens = tokenize(text)
    for kw in keywords:
        seq = tokenize(kw)
        if seq and any(tokens[i : i + len(seq)] == seq for i in range(len(tokens))):
            return True
    return False


words = st.sampled_from(["new", "york", "NEW", "newyork", "Straße", "strasse", "ＹＯＲＫ", "it's", "-", "!", "é", "É"])


@given(st.lists(st.lists(words, max_size=3).map(" ".join), max_size=3), st.lists(words, max_size=8).map(" ".join))
def test_matcher_equals_the_reference_search(keywords, text):
    assert KeywordMatcher(keywords).matches(text) == reference_matches(keywords, text)
