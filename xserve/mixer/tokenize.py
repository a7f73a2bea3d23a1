"""Unicode-aware tokens and muted-keyword matching (reference ``MutedKeywordFilter``).

Text is normalised for caseless matching as Unicode recommends (NFKC, casefold,
NFKC again: "ＮＥＷ Ｙｏｒｋ" and "new york" agree, "Straße" matches "strasse"),
with invisible word-break hints (zero-width space, soft hyphen, word joiner)
removed, then split into tokens of three kinds:

* **words** of scripts written with spaces between words (Latin, Greek,
  Cyrillic, Arabic, Hangul, Devanagari, ...): runs of letters, digits,
  underscore and combining marks; an inner apostrophe stays in the word;
* **runs of unspaced script**: characters of the scripts written without spaces
  between words (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar;
  ``_UNSPACED_RANGES``, decided by code point), punctuation excepted;
* **runs of symbols**: emoji and other ``So`` characters, with the modifiers,
  variation selectors and zero-width joiners that build an emoji sequence.

Everything else (spaces, punctuation, ``#`` and ``@``) separates tokens, so
muting "#spoilers" mutes "spoilers" too. A keyword is tokenized the same way
and matches a contiguous run of the text's tokens. A word must equal its text
token: "york" does not match "yorkshire", "New York" matches "new york times"
and "NEW-YORK" but not "newyork". A run of unspaced script or of symbols may
lie inside its text token, since nothing marks where a word starts there:
"北京" matches "我爱北京天安门" and "🍕" matches "🍕🍕". In a keyword of several
tokens the first may end its text token and the last may begin one
("iphone手机" matches "新款iphone手机壳"), and the ones between are whole.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

__all__ = ["KeywordMatcher", "tokenize"]

# Blocks of the scripts written without spaces between words: (first, last) code point, sorted.
_UNSPACED_RANGES = (
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x2E80, 0x2FDF),  # CJK and Kangxi radicals
    (0x3005, 0x3007),  # ideographic iteration mark, closing mark, number zero
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3031, 0x3035),  # kana repeat marks
    (0x3038, 0x303C),  # Han numerals and iteration marks
    (0x3040, 0x30FF),  # Hiragana, Katakana (with the prolonged sound mark)
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA9E0, 0xA9FF),  # Myanmar extended-B
    (0xAA60, 0xAA7F),  # Myanmar extended-A
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x16FE0, 0x16FFF),  # ideographic symbols and punctuation
    (0x1AFF0, 0x1B16F),  # Kana extended and supplement, small kana
    (0x20000, 0x323AF),  # CJK unified ideographs extensions B to H
)
_SCANNED_END = 0x20000  # the Unicode database is read below this; beyond, _UNSPACED_RANGES hold ideographs only
_WORD, _UNSPACED, _SYMBOL = 1, 2, 3  # token kinds; the last two match as substrings
_ASCII_WORD = re.compile(r"[0-9A-Za-z_]+(?:'[0-9A-Za-z_]+)*")
_ASTRAL = "(?=[\U00010000-\U0010ffff])"  # one range test before a class beyond the BMP (tested range by range)
_INVISIBLE = re.compile("[\u200b\u00ad\u2060\ufeff]")  # zero-width space, soft hyphen, word joiner, BOM

Token = tuple[str, int]  # (folded text, kind)


def tokenize(text: str) -> list[str]:
    return [token for token, _ in _tokens(_fold(text))]


def _fold(text: str) -> str:
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return folded if folded.isascii() else _INVISIBLE.sub("", folded)


def _tokens(folded: str) -> list[Token]:
    if folded.isascii():  # words only: the same tokens as _token_pattern's, at a third of the cost
        return [(w, _WORD) for w in _ASCII_WORD.findall(folded)]
    return [(w, _WORD) if w else (u, _UNSPACED) if u else (s, _SYMBOL) for w, u, s in _token_pattern().findall(folded)]


@functools.cache
def _token_pattern() -> re.Pattern[str]:
    """The tokenizer as one regular expression, its classes read from the Unicode database on first use (~0.1 s).

    Group 1 is a word, group 2 a run of unspaced script, group 3 a run of symbols (the token kinds).
    """
    in_unspaced = bytearray(_SCANNED_END)
    for first, last in _UNSPACED_RANGES:
        end = min(last + 1, _SCANNED_END)
        in_unspaced[first:end] = b"\1" * max(end - first, 0)
    words = [(ord("_"), ord("_"))]
    unspaced = [(first, last) for first, last in _UNSPACED_RANGES if first >= _SCANNED_END]  # ideographs only: whole
    marks = [(0xE0100, 0xE01EF)]  # variation selectors supplement
    symbols: list[tuple[int, int]] = []
    extenders = [(0x200D, 0x200D), (0xE0020, 0xE007F)]  # the zero-width joiner and tags of emoji sequences
    for cp in range(_SCANNED_END):
        c = chr(cp)
        category = unicodedata.category(c)
        if in_unspaced[cp]:
            if category[0] not in "PZ":  # punctuation separates: Thai, Khmer, Myanmar full stops, katakana middle dot
                unspaced.append((cp, cp))
        elif c.isalnum():
            words.append((cp, cp))  # what re's \w matches, less the unspaced scripts
        elif category[0] == "M":
            marks.append((cp, cp))  # combining marks: Devanagari vowel signs, emoji variation selectors and keycaps
        elif category == "So":
            symbols.append((cp, cp))  # emoji, pictographs
        elif category == "Sk":
            extenders.append((cp, cp))  # emoji skin-tone modifiers
    # A word is matched per plane (a repeat of one class is a tight loop; a word mixing the planes splits);
    # unspaced script and symbols mix the planes (ideographs of the CJK extensions, emoji) in one run.
    (bw, aw), (bwm, awm) = _classes(words), _classes(words + marks)
    return re.compile(
        f"({bw}{bwm}*(?:['’]{bw}{bwm}*)*|{_ASTRAL}{aw}{awm}*)"
        f"|({_one(unspaced)}{_run(unspaced + marks)})"
        f"|({_one(symbols)}{_run(symbols + marks + extenders)})"
    )


def _one(ranges: list[tuple[int, int]]) -> str:
    """A pattern matching one code point of ``ranges`` (``(first, last)`` pairs)."""
    bmp, astral = _classes(ranges)
    return f"(?:{bmp}|{_ASTRAL}{astral})" if astral else bmp


def _run(ranges: list[tuple[int, int]]) -> str:
    """A pattern matching any number of code points of ``ranges``."""
    bmp, astral = _classes(ranges)
    return f"(?:{bmp}+|{_ASTRAL}{astral}+)*" if astral else f"{bmp}*"


def _classes(ranges: list[tuple[int, int]]) -> tuple[str, str]:
    """Two bracket classes matching the code points of ``ranges``: those in the Basic Multilingual Plane, and the
    rest ("" when none). ``re`` tests a class of BMP code points with one bitmap lookup but one reaching beyond
    the BMP range by range (hence ``_ASTRAL`` before it), and repeats one class in a tight loop, unlike an
    alternation: one class per token kind spanning both planes tokenized English text ~7x slower here."""
    merged: list[list[int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    planes = ([(a, min(b, 0xFFFF)) for a, b in merged if a <= 0xFFFF], [(max(a, 0x10000), b) for a, b in merged if b > 0xFFFF])
    bmp, astral = ("".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in plane)
                   for plane in planes)
    return f"[{bmp}]", astral and f"[{astral}]"


class _Keyword:
    """One keyword's tokens and where each may lie in its text token (see the module docstring)."""

    __slots__ = ("tokens",)

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens

    @property
    def first(self) -> str:
        return self.tokens[0][0]

    def found_in(self, text: list[Token]) -> bool:
        n = len(self.tokens)
        for i in range(len(text) - n + 1):
            if all(self._matches(j, n, text[i + j]) for j in range(n)):
                return True
        return False

    def _matches(self, j: int, n: int, token: Token) -> bool:
        word, kind = self.tokens[j]
        if token[1] != kind:
            return False
        if kind == _WORD or 0 < j < n - 1:
            return token[0] == word
        if n == 1:
            return word in token[0]
        return token[0].endswith(word) if j == 0 else token[0].startswith(word)


class KeywordMatcher:
    """Matches any of ``keywords`` (see the module docstring); keywords with no tokens are ignored."""

    def __init__(self, keywords: Iterable[str]) -> None:
        self._keywords = [_Keyword(tokens) for keyword in keywords if (tokens := _tokens(_fold(keyword)))]

    def __bool__(self) -> bool:
        return bool(self._keywords)

    def matches(self, text: str) -> bool:
        folded = _fold(text)
        # a keyword's first token lies in the text as a substring: skips the tokenizer for most posts
        candidates = [k for k in self._keywords if k.first in folded]
        if not candidates:
            return False
        tokens = _tokens(folded)
        return any(k.found_in(tokens) for k in candidates)
