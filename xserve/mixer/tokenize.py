"""Unicode-aware word tokens and muted-keyword matching (reference ``MutedKeywordFilter``).

Text is normalised for caseless matching as Unicode recommends (NFKC, casefold,
NFKC again: "ＮＥＷ Ｙｏｒｋ" and "new york" agree, "Straße" matches "strasse"),
then split into runs of word characters (letters, digits, underscore in any
script; an inner apostrophe stays in the word). A keyword of several tokens
matches a contiguous run of the text's tokens, so "New York" matches "new york
times" but not "newyork", and "york" does not match "yorkshire".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = ["KeywordMatcher", "tokenize"]

_WORD = re.compile(r"\w+(?:['’]\w+)*")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(_fold(text))


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


class KeywordMatcher:
    """Matches any of ``keywords`` as a token sequence; keywords with no tokens are ignored."""

    def __init__(self, keywords: Iterable[str]) -> None:
        self._by_first: dict[str, list[tuple[str, ...]]] = {}
        for keyword in keywords:
            tokens = tuple(tokenize(keyword))
            if tokens:
                self._by_first.setdefault(tokens[0], []).append(tokens)

    def __bool__(self) -> bool:
        return bool(self._by_first)

    def matches(self, text: str) -> bool:
        folded = _fold(text)
        # a keyword's first token must occur as a substring: skips the tokenizer for most posts
        if not any(first in folded for first in self._by_first):
            return False
        tokens = _WORD.findall(folded)
        for i, token in enumerate(tokens):
            for seq in self._by_first.get(token, ()):
                if tuple(tokens[i : i + len(seq)]) == seq:
                    return True
        return False
