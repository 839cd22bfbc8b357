from __future__ import annotations

import pytest

from xlgap.languages import (
    LANGUAGES,
    XTREME_LANGUAGES,
    UnknownLanguageError,
    check_language,
    language_code,
    language_info,
    language_name,
)


def test_every_xtreme_language_round_trips_through_its_name():
    assert len(XTREME_LANGUAGES) == 40
    for code in XTREME_LANGUAGES:
        assert language_code(language_name(code)) == code


def test_names_match_the_hub_udpos_configs():
    assert language_name("de") == "German"
    assert language_name("fa") == "Persian"
    assert language_name("tl") == "Tagalog"
    assert language_name("zh") == "Chinese"
    assert language_code("german") == "de"
    assert language_code(" Farsi ") == "fa"


def test_every_language_has_script_and_family():
    for lang in LANGUAGES.values():
        assert lang.script and lang.family and lang.branch
    assert language_info("hi").script == "Devanagari"
    assert language_info("ar").family == "Afro-Asiatic"
    assert language_info("eu").family == "Basque"


def test_check_language_accepts_known_codes():
    assert check_language("sw", "data.languages") == "sw"


def test_unknown_code_names_where_and_suggests():
    with pytest.raises(UnknownLanguageError) as err:
        check_language("German", "eval.languages[2]")
    message = str(err.value)
    assert "eval.languages[2]" in message
    assert "'German'" in message
    assert "'de' (German)" in message


def test_unknown_code_typo_suggests_close_codes():
    with pytest.raises(UnknownLanguageError, match=r"'ens'.*did you mean .*'en' \(English\)"):
        check_language("ens", "train.language")


def test_unknown_name_is_an_error():
    with pytest.raises(UnknownLanguageError, match="Klingon"):
        language_code("Klingon")
