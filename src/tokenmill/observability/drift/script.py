"""A small writing-system and language classifier for the prompt-mix drift signal.

The dominant Unicode script of a text's letters names its category ("cyrillic",
"han", "arabic", ...). Latin-script text is refined by counting very common function
words of seven European languages ("en", "fr", "es", "de", "it", "pt", "nl"), falling
back to "latin" when no language clearly leads. Text without letters is "none".
It is a traffic-mix signal, not a language identifier to quote: it needs no model and
costs microseconds, and a shift in its category counts is what drift detection reads.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

# First word of a character's Unicode name -> category.
_SCRIPTS = {
    "LATIN": "latin",
    "CYRILLIC": "cyrillic",
    "GREEK": "greek",
    "ARABIC": "arabic",
    "HEBREW": "hebrew",
    "CJK": "han",
    "HIRAGANA": "japanese",
    "KATAKANA": "japanese",
    "HANGUL": "hangul",
    "DEVANAGARI": "devanagari",
    "THAI": "thai",
    "BENGALI": "bengali",
    "TAMIL": "tamil",
    "GEORGIAN": "georgian",
    "ARMENIAN": "armenian",
}

# Frequent function words, space-separated; a word shared by languages counts for each.
_STOPWORDS = {
    "en": "the and is are was were of to in that it this with for you what how have not "
    "be can do does my your which would should there their they",
    "fr": "le la les de des est et une un du pour dans que qui pas sur avec ce cette sont "
    "je vous nous il elle au aux ne plus comment",
    "es": "el la los las de es y una un del por para que con como pero está son se lo su "
    "mi muy más cómo qué yo usted puedes",
    "de": "der die das und ist nicht ein eine mit für auf den dem ich sie wir zu es "
    "auch sich wie was kann oder",
    "it": "il lo gli di che è e una un per non con sono come della nel anche questo "
    "io mi ti più cosa perché",
    "pt": "o os as de é e um uma do da dos das para não com que como em no na isso eu "
    "você mais por muito",
    "nl": "de het een en is van dat niet op te zijn met voor ik je wat hoe er maar ook "
    "deze dit kan wordt",
}
_WORD_LANGS: dict[str, list[str]] = {}
for _lang, _words in _STOPWORDS.items():
    for _w in _words.split():
        _WORD_LANGS.setdefault(_w, []).append(_lang)
_WORD = re.compile(r"[^\W\d_]+")
_MAX_LETTERS = 4000
"""Letters read per text: enough to call the script of any prompt, bounded cost."""


def _script_of_char(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return _SCRIPTS.get(name.split(" ", 1)[0], "other")


def _latin_language(text: str) -> str:
    """The language whose function words the text uses most, if it leads outright;
    else "latin" (no function word, or a tie)."""
    hits: Counter[str] = Counter()
    for word in _WORD.findall(text[: 4 * _MAX_LETTERS].lower()):
        for lang in _WORD_LANGS.get(word, ()):
            hits[lang] += 1
    if not hits:
        return "latin"
    (best, n), *rest = hits.most_common(2) + [("", 0)]
    runner_up = rest[0][1]
    return best if n > runner_up else "latin"


def script_category(text: str) -> str:
    """The category of `text`: a language code for clear Latin-script European text,
    else its dominant script's name, "other" for scripts not listed, "none" without
    letters. Pure; reads at most the first few thousand letters."""
    counts: Counter[str] = Counter()
    seen = 0
    for ch in text:
        if ch.isalpha():
            counts[_script_of_char(ch)] += 1
            seen += 1
            if seen >= _MAX_LETTERS:
                break
    if not counts:
        return "none"
    if counts["japanese"] and counts["han"]:
        # Japanese mixes kanji with kana; any kana marks the text as Japanese.
        counts["japanese"] += counts.pop("han")
    script = counts.most_common(1)[0][0]
    return _latin_language(text) if script == "latin" else script
