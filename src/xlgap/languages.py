"""Languages: ISO 639-1 codes, English names (as in `udpos.English`), scripts and families.

The table covers every XTREME and XTREME-R language and the other languages common in
cross-lingual transfer work. Families and branches follow the XTREME paper's table where it
has the language (Glottolog-style top-level families, "Basque" for the isolate).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from xlgap.utils.errors import UserError


@dataclass(frozen=True)
class Language:
    """One language: ISO 639-1 code, English name, writing system, family and branch."""

    code: str
    name: str
    script: str
    family: str
    branch: str


IE = "Indo-European"
AA = "Afro-Asiatic"
NC = "Niger-Congo"
AN = "Austronesian"

_TABLE: tuple[tuple[str, str, str, str, str], ...] = (
    ("af", "Afrikaans", "Latin", IE, "Germanic"),
    ("am", "Amharic", "Ge'ez", AA, "Semitic"),
    ("ar", "Arabic", "Arabic", AA, "Semitic"),
    ("az", "Azerbaijani", "Latin", "Turkic", "Oghuz"),
    ("be", "Belarusian", "Cyrillic", IE, "Slavic"),
    ("bg", "Bulgarian", "Cyrillic", IE, "Slavic"),
    ("bn", "Bengali", "Bengali", IE, "Indo-Aryan"),
    ("ca", "Catalan", "Latin", IE, "Romance"),
    ("cs", "Czech", "Latin", IE, "Slavic"),
    ("cy", "Welsh", "Latin", IE, "Celtic"),
    ("da", "Danish", "Latin", IE, "Germanic"),
    ("de", "German", "Latin", IE, "Germanic"),
    ("el", "Greek", "Greek", IE, "Greek"),
    ("en", "English", "Latin", IE, "Germanic"),
    ("es", "Spanish", "Latin", IE, "Romance"),
    ("et", "Estonian", "Latin", "Uralic", "Finnic"),
    ("eu", "Basque", "Latin", "Basque", "Basque"),
    ("fa", "Persian", "Arabic", IE, "Iranian"),
    ("fi", "Finnish", "Latin", "Uralic", "Finnic"),
    ("fr", "French", "Latin", IE, "Romance"),
    ("ga", "Irish", "Latin", IE, "Celtic"),
    ("gl", "Galician", "Latin", IE, "Romance"),
    ("gu", "Gujarati", "Gujarati", IE, "Indo-Aryan"),
    ("ha", "Hausa", "Latin", AA, "Chadic"),
    ("he", "Hebrew", "Hebrew", AA, "Semitic"),
    ("hi", "Hindi", "Devanagari", IE, "Indo-Aryan"),
    ("hr", "Croatian", "Latin", IE, "Slavic"),
    ("ht", "Haitian Creole", "Latin", "Creole", "French-based creole"),
    ("hu", "Hungarian", "Latin", "Uralic", "Ugric"),
    ("hy", "Armenian", "Armenian", IE, "Armenian"),
    ("id", "Indonesian", "Latin", AN, "Malayo-Polynesian"),
    ("ig", "Igbo", "Latin", NC, "Volta-Niger"),
    ("is", "Icelandic", "Latin", IE, "Germanic"),
    ("it", "Italian", "Latin", IE, "Romance"),
    ("ja", "Japanese", "Han and kana", "Japonic", "Japanese"),
    ("jv", "Javanese", "Latin", AN, "Malayo-Polynesian"),
    ("ka", "Georgian", "Georgian", "Kartvelian", "Karto-Zan"),
    ("kk", "Kazakh", "Cyrillic", "Turkic", "Kipchak"),
    ("km", "Khmer", "Khmer", "Austroasiatic", "Khmer"),
    ("kn", "Kannada", "Kannada", "Dravidian", "South Dravidian"),
    ("ko", "Korean", "Hangul", "Koreanic", "Korean"),
    ("ky", "Kyrgyz", "Cyrillic", "Turkic", "Kipchak"),
    ("lt", "Lithuanian", "Latin", IE, "Baltic"),
    ("lv", "Latvian", "Latin", IE, "Baltic"),
    ("mk", "Macedonian", "Cyrillic", IE, "Slavic"),
    ("ml", "Malayalam", "Malayalam", "Dravidian", "South Dravidian"),
    ("mn", "Mongolian", "Cyrillic", "Mongolic", "Mongolic"),
    ("mr", "Marathi", "Devanagari", IE, "Indo-Aryan"),
    ("ms", "Malay", "Latin", AN, "Malayo-Polynesian"),
    ("mt", "Maltese", "Latin", AA, "Semitic"),
    ("my", "Burmese", "Myanmar", "Sino-Tibetan", "Lolo-Burmese"),
    ("ne", "Nepali", "Devanagari", IE, "Indo-Aryan"),
    ("nl", "Dutch", "Latin", IE, "Germanic"),
    ("no", "Norwegian", "Latin", IE, "Germanic"),
    ("pa", "Punjabi", "Gurmukhi", IE, "Indo-Aryan"),
    ("pl", "Polish", "Latin", IE, "Slavic"),
    ("pt", "Portuguese", "Latin", IE, "Romance"),
    ("qu", "Quechua", "Latin", "Quechuan", "Quechua"),
    ("ro", "Romanian", "Latin", IE, "Romance"),
    ("ru", "Russian", "Cyrillic", IE, "Slavic"),
    ("sk", "Slovak", "Latin", IE, "Slavic"),
    ("sl", "Slovenian", "Latin", IE, "Slavic"),
    ("so", "Somali", "Latin", AA, "Cushitic"),
    ("sq", "Albanian", "Latin", IE, "Albanian"),
    ("sr", "Serbian", "Cyrillic", IE, "Slavic"),
    ("sv", "Swedish", "Latin", IE, "Germanic"),
    ("sw", "Swahili", "Latin", NC, "Bantu"),
    ("ta", "Tamil", "Tamil", "Dravidian", "South Dravidian"),
    ("te", "Telugu", "Telugu", "Dravidian", "South-Central Dravidian"),
    ("th", "Thai", "Thai", "Kra-Dai", "Tai"),
    ("tl", "Tagalog", "Latin", AN, "Malayo-Polynesian"),
    ("tr", "Turkish", "Latin", "Turkic", "Oghuz"),
    ("uk", "Ukrainian", "Cyrillic", IE, "Slavic"),
    ("ur", "Urdu", "Arabic", IE, "Indo-Aryan"),
    ("uz", "Uzbek", "Latin", "Turkic", "Karluk"),
    ("vi", "Vietnamese", "Latin", "Austroasiatic", "Vietic"),
    ("wo", "Wolof", "Latin", NC, "Senegambian"),
    ("xh", "Xhosa", "Latin", NC, "Bantu"),
    ("yo", "Yoruba", "Latin", NC, "Volta-Niger"),
    ("zh", "Chinese", "Han", "Sino-Tibetan", "Sinitic"),
    ("zu", "Zulu", "Latin", NC, "Bantu"),
)

LANGUAGES: dict[str, Language] = {row[0]: Language(*row) for row in _TABLE}

# Other English names that datasets use for the same languages.
_NAME_ALIASES = {
    "farsi": "fa",
    "modern greek": "el",
    "filipino": "tl",
    "bangla": "bn",
    "haitian": "ht",
    "kirghiz": "ky",
    "panjabi": "pa",
    "mandarin": "zh",
}

_BY_NAME: dict[str, str] = {lang.name.lower(): code for code, lang in LANGUAGES.items()} | _NAME_ALIASES

# The 40 languages of XTREME (its PAN-X set).
XTREME_LANGUAGES: tuple[str, ...] = tuple(
    "af ar bg bn de el en es et eu fa fi fr he hi hu id it ja jv ka kk ko ml mr ms my nl pt ru sw ta te th "
    "tl tr ur vi yo zh".split()
)


class UnknownLanguageError(UserError, ValueError):
    """A language code or name that is not in the table."""


def _suggestions(text: str) -> str:
    """Close codes and names for `text`, as a phrase for an error message ("" when none)."""
    lowered = text.strip().lower()
    codes: list[str] = []
    if lowered in _BY_NAME:
        codes.append(_BY_NAME[lowered])
    codes += difflib.get_close_matches(lowered, list(LANGUAGES), n=3, cutoff=0.5)
    codes += [_BY_NAME[n] for n in difflib.get_close_matches(lowered, list(_BY_NAME), n=3, cutoff=0.75)]
    unique = list(dict.fromkeys(codes))
    if not unique:
        return ""
    return "; did you mean " + " or ".join(f"'{c}' ({LANGUAGES[c].name})" for c in unique) + "?"


def check_language(code: str, where: str) -> str:
    """Return `code` if it is a known ISO 639-1 code; otherwise raise UnknownLanguageError naming
    `where` the code came from (e.g. a config key) and suggesting close codes or names."""
    if code in LANGUAGES:
        return code
    raise UnknownLanguageError(
        f"{where}: unknown language code {code!r} (expected an ISO 639-1 code such as 'en' or 'de')"
        f"{_suggestions(str(code))}"
    )


def language_info(code: str) -> Language:
    """The Language record for an ISO 639-1 code."""
    return LANGUAGES[check_language(code, "language code")]


def language_name(code: str) -> str:
    """The English name of a language code, e.g. 'de' -> 'German'."""
    return language_info(code).name


def language_code(name: str) -> str:
    """The ISO 639-1 code of an English language name (case-insensitive), e.g. 'German' -> 'de'."""
    code = _BY_NAME.get(name.strip().lower())
    if code is None:
        raise UnknownLanguageError(f"unknown language name {name!r}{_suggestions(name)}")
    return code
