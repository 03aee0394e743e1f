"""Prompt subsets (docs/method.md#prompt-words-and-subset-conditionings): which words each of the 2**k conditionings keeps."""

import pytest

import jaxpid
from jaxpid.sd.prompts import replace_source, resolve_sources, subset_prompts, without_word

PROMPT = "a red circle and a blue square."


def test_conditional_subsets_keep_the_context_in_bitmask_order():
    s = subset_prompts(PROMPT, ["circle", "square"], conditional=True)
    assert s.prompts == (
        "a red and a blue.",  # b=0: context alone
        "a red circle and a blue.",  # b=1: source 1 (circle)
        "a red and a blue square.",  # b=2: source 2 (square)
        PROMPT,  # b=3: both
    )


def test_plain_subsets_have_no_context_and_start_from_the_empty_prompt():
    s = subset_prompts(PROMPT, ["square", "red"], conditional=False)
    assert s.prompts == ("", "square", "red", "red square")  # original word order kept


def test_placeholder_removal():
    s = subset_prompts(PROMPT, ["circle", "square"], removal="placeholder", placeholder="_")
    assert s.prompts[0] == "a red _ and a blue _."
    assert s.to_dict()["placeholder"] == "_"


def test_multi_word_subsets_for_k_3_and_4():
    s = subset_prompts("a red circle and a blue square", ["red", "circle", "blue", "square"], conditional=True)
    assert len(s.prompts) == 16 and s.prompts[0] == "a and a" and s.prompts[0b0101] == "a red and a blue"


def test_repeated_words_need_an_occurrence():
    with pytest.raises(jaxpid.PromptError, match="a@1, a@2"):
        resolve_sources(PROMPT, ["a", "red"])
    (first,) = resolve_sources(PROMPT, ["a@2"])
    assert first.position == 4
    with pytest.raises(jaxpid.PromptError, match="occurs 2 time"):
        resolve_sources(PROMPT, ["a@3"])


def test_matching_ignores_case_and_punctuation():
    (square,) = resolve_sources(PROMPT, ["Square"])
    assert square.word == "square" and square.position == 6


@pytest.mark.parametrize(
    "sources, error, message",
    [
        (["triangle"], jaxpid.PromptError, "not in the prompt"),
        (["circle", "circle"], jaxpid.PromptError, "same word"),
        ([], jaxpid.ConfigError, "at least one"),
        (["a@1", "red", "circle", "and", "blue"], jaxpid.ConfigError, "allow_large_k"),
    ],
)
def test_bad_sources(sources, error, message):
    with pytest.raises(error, match=message):
        subset_prompts(PROMPT, sources)


def test_imin_alternatives_and_cmi_conditionings():
    s = subset_prompts(PROMPT, ["circle", "square"], conditional=True)
    assert replace_source(s, 0, "triangle") == "a red triangle and a blue."
    plain = subset_prompts(PROMPT, ["circle", "square"], conditional=False)
    assert replace_source(plain, 1, "box") == "box"
    assert without_word(PROMPT, s.sources[1]) == "a red circle and a blue."
