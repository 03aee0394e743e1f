"""jaxpid's own CLIP BPE (jaxpid.sd.clip_bpe) against transformers' CLIPTokenizer of the same folder.

transformers is the reference here only: loading a CLIP tokenizer must not import it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest
from transformers import CLIPTokenizer

from jaxpid.errors import ConfigError, PromptError
from jaxpid.io.atomic import write_files
from jaxpid.sd.clip_bpe import ClipBPE, byte_symbols
from jaxpid.sd.tokenizer import PromptTokenizer, load_tokenizer, write_test_tokenizer
from jaxpid.sd.weights import DEMO_DIR

END = "<|endoftext|>"
START = "<|startoftext|>"
WORDS = ["a", "an", "at", "cat", "cats", "catalog", "photo", "of", "astronaut", "riding", "horse", "on", "the",
         "moon", "café", "naïve", "s", "re", "it", "dog", "red", "blue", "東京", "über"]

CORPUS = [
    "", " ", "   ", "a", "A", "a cat", "a photo of an astronaut riding a horse on the moon",
    "  leading and trailing whitespace  ", "multiple     spaces   between",
    "punctuation, everywhere! (really?) [yes]; {ok} -- done...", "!!!", "!", "cat!", "!cat", "a!b!c",
    "it's the cat's toy; we're sure they've gone, I'm told you'll see, he'd say, don't",
    "'s 't 're 've 'm 'll 'd", "''s", "'S 'RE", "rock'n'roll",
    "digits 0 1 42 3.14159 1,000,000 2024-01-01", "١٢٣ ½ ² Ⅻ ⑤",
    "UPPER lower MiXeD CaSe", "CAFÉ café Café", "naïve NAÏVE résumé façade Ångström ß ẞ",
    "e\u0301 a\u0308 n\u0303 (decomposed accents)", "İstanbul ΑΣ ΟΔΥΣΣΕΥΣ ǅ ﬁ ﬂ",
    "東京タワー 北京 한국어 ภาษาไทย עברית العربية", "emoji 🐱🚀 👩‍👩‍👧 ❤️ 🇫🇷 😀😀😀",
    "tab\there\nnewline\r\nwindows\x0bvtab\x0cff", "control\x00\x01\x1b[31m\x7f\x9f chars", "nbsp\u00a0em\u2003ideo\u3000ls\u2028nel\x85",
    "zero\u200bwidth\u200cnon\u200djoiner \ufeffbom", "<|endoftext|>", "a <|endoftext|> b", "a<|endoftext|>b",
    "<|startoftext|>a cat<|endoftext|>", "<|ENDOFTEXT|> <|StartOfText|>", "<|endoftext|<|endoftext|>>", "<| endoftext |>",
    "unknownword zyzzyva qwertyuiop", "catalogue cataloged cats' dog's", "http://example.com/a?b=1&c=2#d user@example.com",
    "C++ C# node.js snake_case kebab-case", "\"double\" 'single' `back`", "a" * 80, "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
]

MAX_LENGTHS = (77, 32, 16)


@pytest.fixture(scope="module", params=[(pad, n) for pad in (END, "!") for n in MAX_LENGTHS],
                ids=[f"{'sd1-end' if pad == END else 'sd2-bang'}-{n}" for pad in (END, "!") for n in MAX_LENGTHS])
def folder(request, tmp_path_factory):
    pad, max_length = request.param
    return write_test_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer", WORDS, pad, max_length)


def assert_same_tokenizer(reference, ours: ClipBPE, texts=CORPUS) -> None:
    assert len(ours) == len(reference)
    for role in ("bos", "eos", "unk", "pad"):
        assert getattr(ours, f"{role}_token_id") == getattr(reference, f"{role}_token_id"), role
        assert getattr(ours, f"{role}_token") == getattr(reference, f"{role}_token"), role
    for text in texts:
        for special in (True, False):
            expected = reference(text, add_special_tokens=special)["input_ids"]
            assert ours.encode(text, add_special_tokens=special) == expected, (text, special)


def test_ids_match_transformers(folder):
    reference = CLIPTokenizer.from_pretrained(str(folder))
    ours = ClipBPE.from_folder(folder)
    assert_same_tokenizer(reference, ours)
    assert ours.model_max_length == reference.model_max_length


def test_padded_encode_and_mask_match_the_diffusers_pipeline_call(folder):
    reference = CLIPTokenizer.from_pretrained(str(folder))
    tok = load_tokenizer(folder)
    fits = [p for p in CORPUS if len(reference(p)["input_ids"]) <= tok.max_length]
    assert len(fits) > len(CORPUS) // 3
    expected = reference(fits, padding="max_length", max_length=tok.max_length, truncation=True)
    ids = tok.encode(fits)
    assert ids.dtype == np.int32 and ids.shape == (len(fits), tok.max_length)
    np.testing.assert_array_equal(ids, np.asarray(expected["input_ids"]))
    np.testing.assert_array_equal(tok.padding_mask(fits), np.asarray(expected["attention_mask"]).astype(bool))
    assert tok.encode([]).shape == (0, tok.max_length)


def test_prompt_tokenizer_old_and_new_agree(folder):
    """PromptTokenizer on transformers' tokenizer (as before) and on ClipBPE (now)."""
    new = load_tokenizer(folder)
    old = PromptTokenizer(CLIPTokenizer.from_pretrained(str(folder)), new.max_length, source=new.source)
    assert (old.pad_id, old.start_id, old.end_id, old.vocab_size, repr(old)) == (
        new.pad_id, new.start_id, new.end_id, new.vocab_size, repr(new))
    for prompt in CORPUS:
        assert new.token_ids(prompt) == old.token_ids(prompt), prompt
        outcomes = []
        for tok in (old, new):
            try:
                outcomes.append(("ok", tok.encode([prompt]).tolist(), tok.word_spans(prompt)))
            except PromptError as error:
                outcomes.append(("error", str(error)))
        assert outcomes[0] == outcomes[1], prompt


def test_folder_variants_match_transformers(tmp_path):
    """Special tokens written as AddedToken dicts (SD 1.x/2.x hub folders), an added_tokens_decoder
    with every flag and a token beyond the vocabulary, tokenizer.json folders, no model_max_length."""
    base = write_test_tokenizer(tmp_path / "base", WORDS)
    config = json.loads((base / "tokenizer_config.json").read_text())
    files = {name: (base / name).read_text() for name in ("vocab.json", "merges.txt")}

    def added(content, **flags):
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False,
                "single_word": False, **flags}

    hub_style = {**config, "bos_token": added(START), "eos_token": added(END), "unk_token": added(END), "pad_token": "!"}
    hub_map = {"bos_token": {k: v for k, v in added(START).items() if k != "__type"}, "eos_token": added(END),
               "unk_token": added(END), "pad_token": "!"}
    decoder = {"0": {"content": "!", "lstrip": True, "rstrip": True, "normalized": False, "single_word": False, "special": True},
               "1000": {"content": "<|ph|>", "lstrip": False, "rstrip": False, "normalized": True, "single_word": True,
                        "special": False},
               "1001": {"content": START, "lstrip": False, "rstrip": True, "normalized": True, "single_word": False,
                        "special": True}}
    variants = {
        "hub-style": ({**files, "tokenizer_config.json": json.dumps(hub_style),
                       "special_tokens_map.json": json.dumps(hub_map)}),
        # the end token registered as eos (normalized) then as pad (a string, raw): the last holds
        "hub-style-sd1": ({**files, "tokenizer_config.json": json.dumps({**hub_style, "pad_token": END}),
                           "special_tokens_map.json": json.dumps({**hub_map, "pad_token": END})}),
        "decoder": ({**files, "tokenizer_config.json": json.dumps({**config, "pad_token": "!", "added_tokens_decoder": decoder})}),
        "extra-and-new-pad": ({**files, "tokenizer_config.json": json.dumps(
            {**{k: v for k, v in config.items() if k != "model_max_length"}, "pad_token": "<pad>",
             "additional_special_tokens": ["<|x|>", added("<|y|>", lstrip=True)]})}),
        "no-config": dict(files),
    }
    texts = CORPUS + ["a <|ph|> cat", "a<|ph|>cat", "<|PH|> x", "cat  !  dog", "x  <|startoftext|>   y", "<|STARTOFTEXT|>y",
                      "<pad> <|x|>  <|y|> z", "a<|y|>"]
    for name, content in variants.items():
        folder = write_files(tmp_path / name, content)
        reference = CLIPTokenizer.from_pretrained(str(folder))
        ours = ClipBPE.from_folder(folder)
        assert_same_tokenizer(reference, ours, texts)
        assert ours.model_max_length == (None if reference.model_max_length > 10**9 else reference.model_max_length), name
        # the same folder saved by transformers as tokenizer.json, without vocab.json / merges.txt
        saved = tmp_path / f"{name}-json"
        reference.save_pretrained(str(saved))
        for leftover in ("vocab.json", "merges.txt"):
            (saved / leftover).unlink(missing_ok=True)
        assert_same_tokenizer(CLIPTokenizer.from_pretrained(str(saved)), ClipBPE.from_folder(saved), texts)


def test_tokenizer_json_merges_as_lists(tmp_path):
    folder = write_test_tokenizer(tmp_path / "tok", WORDS)
    saved = tmp_path / "json"
    CLIPTokenizer.from_pretrained(str(folder)).save_pretrained(str(saved))
    for leftover in ("vocab.json", "merges.txt"):
        (saved / leftover).unlink(missing_ok=True)
    data = json.loads((saved / "tokenizer.json").read_text())
    merges = data["model"]["merges"]
    as_strings = {**data, "model": {**data["model"], "merges": [" ".join(m) if isinstance(m, list) else m for m in merges]}}
    as_lists = {**data, "model": {**data["model"], "merges": [m.split(" ") if isinstance(m, str) else m for m in merges]}}
    for variant in (as_strings, as_lists):
        (saved / "tokenizer.json").write_text(json.dumps(variant))
        assert_same_tokenizer(CLIPTokenizer.from_pretrained(str(saved)), ClipBPE.from_folder(saved))


def _bpe_folder(folder, merges, drop=()):
    symbols = list(byte_symbols().values())
    vocab = {s: i for i, s in enumerate(t for t in symbols + [s + "</w>" for s in symbols] if t not in drop)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[START], vocab[END] = len(vocab), len(vocab) + 1
    return write_files(folder, {
        "vocab.json": json.dumps(vocab), "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "tokenizer_config.json": json.dumps({"model_max_length": 77})})


def test_merges_apply_one_pair_at_a_time_like_the_tokenizers_library(tmp_path):
    """The lowest-ranked adjacent pair merges first, leftmost first, and the pairs it forms join
    the queue at once: "aaaaa" with merges [aa+a, a+a] gives aaa|a|a</w> (merging every a+a
    first, as OpenAI's reference code does, would give aa|aa|a</w>)."""
    folder = _bpe_folder(tmp_path / "aaa", [("aa", "a"), ("a", "a")])
    ours = ClipBPE.from_folder(folder)
    assert ours.encode("aaaaa", add_special_tokens=False) == [ours.token_to_id(t) for t in ("aaa", "a", "a</w>")]
    assert_same_tokenizer(CLIPTokenizer.from_pretrained(str(folder)), ours, ["a" * n for n in range(1, 12)])
    # random merge tables in arbitrary rank order (not the order their tokens were built in)
    rng = random.Random(0)
    for trial in range(6):
        tokens, merges = ["a", "b", "a</w>", "b</w>"], []
        for _ in range(25):
            pair = (rng.choice([t for t in tokens if not t.endswith("</w>")]), rng.choice(tokens))
            if pair not in merges:
                merges.append(pair)
                tokens.append(pair[0] + pair[1])
        rng.shuffle(merges)
        folder = _bpe_folder(tmp_path / f"t{trial}", merges)
        texts = ["".join(rng.choice("ab") for _ in range(rng.randint(2, 24))) for _ in range(300)]
        assert_same_tokenizer(CLIPTokenizer.from_pretrained(str(folder)), ClipBPE.from_folder(folder), texts)


def test_symbols_outside_the_vocabulary_become_the_unknown_token(tmp_path):
    folder = _bpe_folder(tmp_path / "holes", [("c", "a"), ("ca", "t</w>")], drop=("z", "q</w>", "Ã", "©</w>"))
    ours = ClipBPE.from_folder(folder)
    texts = ["z", "zz", "quiz", "q", "cat zcat catq", "café", "zqz q"]
    assert ours.unk_token_id in ours.encode("quiz")
    assert_same_tokenizer(CLIPTokenizer.from_pretrained(str(folder)), ours, texts)


def test_bad_folders_raise_config_errors(tmp_path):
    folder = write_test_tokenizer(tmp_path / "tok", WORDS)
    (folder / "merges.txt").write_text("#version: 0.2\nc a\nca t</w>\nzz qq\n")
    with pytest.raises(ConfigError, match="merge 'zz' 'qq'"):
        ClipBPE.from_folder(folder)
    (folder / "merges.txt").write_text("#version: 0.2\nc a t\n")
    with pytest.raises(ConfigError, match="not two symbols"):
        ClipBPE.from_folder(folder)
    (folder / "merges.txt").unlink()
    with pytest.raises(ConfigError, match="no CLIP tokenizer files"):
        ClipBPE.from_folder(folder)
    (tmp_path / "wp").mkdir()
    (tmp_path / "wp" / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    with pytest.raises(ConfigError, match="not a BPE tokenizer"):
        ClipBPE.from_folder(tmp_path / "wp")


def test_word_cache_gives_the_same_ids(folder):
    ours = ClipBPE.from_folder(folder)
    first = [ours.encode(p) for p in CORPUS]
    assert [ours.encode(p) for p in CORPUS] == first


def test_loading_a_clip_tokenizer_does_not_import_transformers():
    code = (
        "import sys\n"
        "import jaxpid.sd.tokenizer as t, jaxpid.priors, jaxpid.analysis\n"
        f"tok = t.load_tokenizer({str(DEMO_DIR / 'tokenizer')!r})\n"
        "tok.encode(['a red circle']); tok.word_spans('a red circle')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
