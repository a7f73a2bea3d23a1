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


# --------------------------------------------------------------------------- scripts written without spaces

def test_unspaced_scripts_match_a_keyword_inside_a_run_of_text():
    # Chinese, Japanese (kanji and kana), Thai: no space marks where a word starts, so a substring counts
    assert KeywordMatcher(["北京"]).matches("我爱北京天安门")
    assert KeywordMatcher(["ワールドカップ"]).matches("今日はワールドカップを見た")
    assert KeywordMatcher(["ねこ"]).matches("うちのねこはかわいい")
    assert KeywordMatcher(["ข้าวผัด"]).matches("ฉันชอบกินข้าวผัดมาก")
    assert not KeywordMatcher(["上海"]).matches("我爱北京天安门")
    assert not KeywordMatcher(["ผัดไทย"]).matches("ฉันชอบกินข้าวผัดมาก")
    assert KeywordMatcher(["カップ"]).matches("ﾜｰﾙﾄﾞｶｯﾌﾟ")  # half-width katakana folds to full width (NFKC)
    # Lao, Khmer, Myanmar, and a zero-width space (a line-break hint in Thai or Khmer text) is no separator
    lao, khmer, myanmar = "ລາວ", "ខ្មែរ", "မြန်မာ"
    for keyword in (lao, khmer, myanmar):
        assert KeywordMatcher([keyword]).matches(f"{keyword[::-1]}{keyword}{keyword[:1]}")
    assert KeywordMatcher(["ข้าวผัด"]).matches("กินข้าว\u200bผัด")


def test_spaced_words_keep_their_boundaries_next_to_unspaced_text():
    assert KeywordMatcher(["python"]).matches("我爱Python编程")
    assert not KeywordMatcher(["cat"]).matches("category") and not KeywordMatcher(["cat"]).matches("猫category")
    assert KeywordMatcher(["cat"]).matches("猫cat猫")
    # several tokens: the first may end a run of unspaced text, the last may begin one, inner ones are whole
    assert KeywordMatcher(["iPhone手机"]).matches("新款iphone手机壳") and KeywordMatcher(["iPhone 手机"]).matches("iPhone手机")
    assert KeywordMatcher(["新款iPhone"]).matches("最新款iphone")
    assert not KeywordMatcher(["iPhone手机"]).matches("iphones手机") and not KeywordMatcher(["手机iphone"]).matches("手机iphones")
    assert not KeywordMatcher(["新款iPhone手机"]).matches("新款 i phone 手机")
    assert tokenize("我爱Python编程!") == ["我爱", "python", "编程"]


def test_combining_marks_stay_in_their_word():
    # Thai vowel and tone marks, Devanagari vowel signs and virama are marks (Mn/Mc), not separators
    assert tokenize("ข้าวผัด") == ["ข้าวผัด"]
    assert tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert not KeywordMatcher(["हन"]).matches("हिन्दी भाषा")
    assert tokenize("𞤀 𞤁𞤂 x 𠀀") == ["𞤢", "𞤣𞤤", "x", "𠀀"]  # letters and ideographs beyond the BMP (Adlam, CJK ext. B)


def test_emoji_and_hashtags():
    assert KeywordMatcher(["🍕"]).matches("friday night 🍕🍕") and KeywordMatcher(["🍕"]).matches("pizza🍕time")
    assert not KeywordMatcher(["🍕"]).matches("burger night 🍔")
    assert KeywordMatcher(["👍🏽"]).matches("great 👍🏽!") and KeywordMatcher(["👨‍👩‍👧"]).matches("family 👨‍👩‍👧 day")
    assert tokenize("pizza🍕time 👍🏽") == ["pizza", "🍕", "time", "👍🏽"]
    assert KeywordMatcher(["#spoilers"]).matches("no #Spoilers please") and KeywordMatcher(["#ワールドカップ"]).matches("今日は#ワールドカップ")
    assert not KeywordMatcher(["#cat"]).matches("#category")
    assert not KeywordMatcher(["!!"]) and KeywordMatcher(["🍕"])  # punctuation alone is no keyword; an emoji is


unspaced = st.text(alphabet="我爱北京天安门うちのねこワールドカップข้าวผัดไทย", min_size=1, max_size=12)


@given(unspaced, st.data())
def test_any_substring_of_unspaced_text_matches(text, data):
    i = data.draw(st.integers(0, len(text) - 1))
    j = data.draw(st.integers(i + 1, len(text)))
    assert KeywordMatcher([text[i:j]]).matches(f"x {text} y")


@given(st.text(alphabet=st.characters(max_codepoint=0x7F)))
def test_the_ascii_fast_path_gives_the_general_tokens(text):
    from xserve.mixer.tokenize import _token_pattern, _tokens

    general = [next(t for t in groups if t) for groups in _token_pattern().findall(text)]
    assert [token for token, _ in _tokens(text)] == general
