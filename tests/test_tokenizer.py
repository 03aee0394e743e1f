"""PromptTokenizer against the transformers CLIPTokenizer call the diffusers SD pipeline makes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from transformers import CLIPTokenizer

from jaxpid.errors import ConfigError, PromptError
from jaxpid.sd.tokenizer import WordSpan, load_tokenizer, write_test_tokenizer

WORDS = ["a", "an", "at", "cat", "cats", "catalog", "photo", "of", "astronaut", "riding", "horse", "on", "the", "moon", "café"]
END = "<|endoftext|>"


@pytest.fixture(params=[END, "!"], ids=["sd1-pad-end", "sd2-pad-bang"])
def folder(request, tmp_path):
    return write_test_tokenizer(tmp_path / "tokenizer", WORDS, pad_token=request.param)


def test_listed_words_are_single_distinct_tokens(folder):
    tok = load_tokenizer(folder)
    ids = [tok.token_ids(word) for word in WORDS]
    assert all(len(i) == 1 for i in ids), dict(zip(WORDS, ids))
    flat = [i[0] for i in ids]
    assert len(set(flat)) == len(WORDS)  # the vocab_file= trap maps every word to the end token
    assert tok.end_id not in flat and tok.start_id not in flat
    assert tok.token_ids("Cat") == tok.token_ids("cat")  # CLIP lower-cases


def test_any_text_tokenizes(folder):
    tok = load_tokenizer(folder)
    ids = tok.token_ids("Zebra 42 #hash ünïcode")
    assert ids and tok.end_id not in ids  # nothing fell back to the unknown (= end) token


def test_pad_id_follows_the_folder(tmp_path):
    sd1 = load_tokenizer(write_test_tokenizer(tmp_path / "sd1", WORDS, pad_token=END))
    sd2 = load_tokenizer(write_test_tokenizer(tmp_path / "sd2", WORDS, pad_token="!"))
    assert sd1.pad_id == sd1.end_id
    assert sd2.pad_id == 0 and sd2.pad_id != sd2.end_id  # "!" is id 0, as in SD 2.x's vocab
    for tok in (sd1, sd2):
        ids = tok.encode(["a cat"])[0]
        assert list(ids[:4]) == [tok.start_id, *tok.token_ids("a cat"), tok.end_id]
        assert np.all(ids[4:] == tok.pad_id)


def test_encode_matches_the_diffusers_pipeline_call(folder):
    tok = load_tokenizer(folder)
    prompts = ["a photo of an astronaut riding a horse on the moon", "", "Cats, at the café!"]
    reference = CLIPTokenizer.from_pretrained(str(folder))
    expected = reference(prompts, padding="max_length", max_length=reference.model_max_length, truncation=True)
    ids = tok.encode(prompts)
    assert ids.dtype == np.int32 and ids.shape == (3, 77)
    np.testing.assert_array_equal(ids, np.asarray(expected["input_ids"]))
    mask = tok.padding_mask(prompts)
    np.testing.assert_array_equal(mask, np.asarray(expected["attention_mask"]).astype(bool))


def test_tokenizer_json_folder_gives_the_same_ids(folder, tmp_path):
    json_folder = tmp_path / "tokenizer_json"
    CLIPTokenizer.from_pretrained(str(folder)).save_pretrained(str(json_folder))
    for name in ("vocab.json", "merges.txt"):
        (json_folder / name).unlink(missing_ok=True)
    assert (json_folder / "tokenizer.json").is_file()
    original, reloaded = load_tokenizer(folder), load_tokenizer(json_folder)
    prompts = ["a photo of a cat", "riding catalogs on the moon!"]
    np.testing.assert_array_equal(reloaded.encode(prompts), original.encode(prompts))
    assert (reloaded.pad_id, reloaded.max_length) == (original.pad_id, original.max_length)


def test_overlong_prompt_raises_with_its_token_count(folder):
    tok = load_tokenizer(folder)
    fits = " ".join(["cat"] * 75)  # 75 + start + end = 77
    assert tok.encode([fits]).shape == (1, 77)
    too_long = " ".join(["cat"] * 76)
    with pytest.raises(PromptError, match="78 tokens") as info:
        tok.encode(["a cat", too_long])
    assert "cat cat cat" in str(info.value)
    with pytest.raises(PromptError, match="78 tokens"):
        tok.word_spans(too_long)


def test_encode_wants_a_list(folder):
    with pytest.raises(TypeError):
        load_tokenizer(folder).encode("a cat")


def test_word_spans_cover_multi_token_words_and_punctuation(folder):
    tok = load_tokenizer(folder)
    prompt = "An Astronaut, riding catalogue  horses! 42"
    spans = tok.word_spans(prompt)
    assert [s.word for s in spans] == prompt.split()
    assert spans[0] == WordSpan("An", 1, 1)
    assert spans[1] == WordSpan("Astronaut,", 2, 2)  # the comma is a token of its own
    assert spans[2] == WordSpan("riding", 4, 1)
    assert spans[3].n_tokens > 1  # "catalogue" is not in the vocabulary as one token
    assert spans[-1].n_tokens == 2  # CLIP splits numbers into digits
    ids = tok.encode([prompt])[0]
    for span in spans:  # every span points at exactly that word's tokens
        np.testing.assert_array_equal(ids[span.first_token : span.first_token + span.n_tokens], tok.token_ids(span.word))
    last = spans[-1]
    assert ids[last.first_token + last.n_tokens] == tok.end_id


def test_max_length_sources(tmp_path):
    folder = write_test_tokenizer(tmp_path / "tok", WORDS)
    assert load_tokenizer(folder).max_length == 77
    with pytest.raises(ConfigError, match="max_position_embeddings 64"):
        load_tokenizer(folder, model_max_positions=64)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    del config["model_max_length"]  # then transformers treats the length as unbounded
    config_path.write_text(json.dumps(config))
    assert load_tokenizer(folder).max_length == 77
    assert load_tokenizer(folder, model_max_positions=32).max_length == 32


def test_missing_tokenizer_files(tmp_path):
    folder = write_test_tokenizer(tmp_path / "tok", WORDS)
    shutil.move(folder / "merges.txt", tmp_path / "merges.txt")
    with pytest.raises(ConfigError, match="no CLIP tokenizer files"):
        load_tokenizer(folder)


def test_write_test_tokenizer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="alphabetic"):
        write_test_tokenizer(tmp_path / "a", ["rock'n'roll"])
    with pytest.raises(ValueError, match="pad_token"):
        write_test_tokenizer(tmp_path / "b", ["cat"], pad_token="<pad>")
