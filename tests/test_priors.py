"""Word priors for ppid: masked-LM priors against PyTorch transformers, uniform and file priors."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from jaxpid.errors import ConfigError, PromptError
from jaxpid.priors import (
    FilePrior,
    MaskedLMPrior,
    UniformPrior,
    load_prior_spec,
    uniform_log_prior,
)
from jaxpid.sd.prompts import resolve_sources

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_bert_parity import saved_bert  # noqa: E402  (the tiny BERT folder of the parity tests)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    model = saved_bert(folder, seed=3)
    tokenizer = transformers.BertTokenizer.from_pretrained(str(folder))
    return model, tokenizer, MaskedLMPrior.from_folder(folder), folder


def torch_log_prob(model, tokenizer, word: str, context: str | None = None) -> float:
    """The same quantity computed independently: write the masks into the text, let the
    tokenizer find them, fill the pieces in one by one (chain rule), score with PyTorch."""
    pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))
    masks = " ".join(["[MASK]"] * len(pieces))
    text = masks if context is None else context.replace(f"<{word}>", masks)
    ids = tokenizer(text)["input_ids"]
    where = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
    assert len(where) == len(pieces)
    total = 0.0
    for step, piece in enumerate(pieces):
        current = list(ids)
        for done in range(step):
            current[where[done]] = pieces[done]
        with torch.no_grad():
            logits = model(torch.tensor([current])).logits[0, where[step]].double()
        total += float(torch.log_softmax(logits, dim=-1)[piece])
    return total


@pytest.mark.parametrize("word, pieces", [("doctor", 1), ("astronaut", 2), ("nurses", 3)])
def test_plain_prior_matches_pytorch(bert, word, pieces):
    model, tokenizer, prior, _ = bert
    assert len(tokenizer.tokenize(word)) == pieces
    assert prior.log_prob(word) == pytest.approx(torch_log_prob(model, tokenizer, word), abs=2e-5)


@pytest.mark.parametrize(
    "word, prompt, marked",
    [
        ("doctor", "a photo of the male doctor riding a horse", "a photo of the male <doctor> riding a horse"),
        ("astronaut", "the astronaut, riding a horse on the moon.", "the <astronaut>, riding a horse on the moon."),
        ("nurses", "a photo of female nurses", "a photo of female <nurses>"),
        ("Doctor", "Doctor on the moon", "<Doctor> on the moon"),
    ],
)
def test_prior_in_context_matches_pytorch(bert, word, prompt, marked):
    model, tokenizer, prior, _ = bert
    expected = torch_log_prob(model, tokenizer, word, marked)
    assert prior.log_prob(word, prompt) == pytest.approx(expected, abs=2e-5)
    assert prior.log_prob(word, prompt) != pytest.approx(prior.log_prob(word), abs=1e-3)  # context matters


def test_priors_for_sources_plain_and_conditional(bert):
    model, tokenizer, prior, _ = bert
    prompt = "a photo of a male doctor, riding a horse"
    plain = prior.priors_for(prompt, ["male", "doctor"], conditional=False)
    np.testing.assert_allclose(
        plain, [torch_log_prob(model, tokenizer, w) for w in ("male", "doctor")], atol=2e-5
    )
    # Conditional PID: p(y_j | c), c = the prompt without the other source (the context of docs/method.md#prompt-words-and-subset-conditionings).
    values = prior.evaluate(prompt, ["male", "doctor"], conditional=True)
    np.testing.assert_allclose(
        values.log_prior,
        [
            torch_log_prob(model, tokenizer, "male", "a photo of a <male>, riding a horse"),
            torch_log_prob(model, tokenizer, "doctor", "a photo of a <doctor>, riding a horse"),
        ],
        atol=2e-5,
    )
    assert values.queries[0] == "[CLS] a photo of a [MASK] , riding a horse [SEP]"
    assert prior.evaluate("astronaut", ["astronaut"], False).queries == ("[CLS] [MASK] [MASK] [SEP]",)
    record = json.loads(json.dumps(values.to_dict()))
    assert record["words"] == ["male", "doctor"] and record["conditional"] is True
    assert record["prior"] == pytest.approx(np.exp(values.log_prior).tolist())
    # Placeholder removal and the whole-prompt variant.
    with_placeholder = prior.priors_for(prompt, ["male", "doctor"], True, removal="placeholder", placeholder="_")
    assert with_placeholder[0] == pytest.approx(
        torch_log_prob(model, tokenizer, "male", "a photo of a <male> _, riding a horse"), abs=2e-5
    )
    keep = MaskedLMPrior(prior.module, prior.params, prior.tokenizer, other_sources="keep")
    assert keep.priors_for(prompt, ["male", "doctor"], True)[1] == pytest.approx(
        torch_log_prob(model, tokenizer, "doctor", "a photo of a male <doctor>, riding a horse"), abs=2e-5
    )
    # Sources already resolved by jaxpid.sd.prompts give the same numbers.
    resolved = resolve_sources(prompt, ["male", "doctor"])
    np.testing.assert_array_equal(prior.priors_for(prompt, resolved, True), values.log_prior)


def test_repeated_words_need_an_index(bert):
    model, tokenizer, prior, _ = bert
    prompt = "a doctor riding a horse"
    with pytest.raises(PromptError, match="occurs 2 times"):
        prior.log_prob("a", prompt)
    expected = torch_log_prob(model, tokenizer, "a", "a doctor riding <a> horse")
    assert prior.log_prob("a", prompt, index=3) == pytest.approx(expected, abs=2e-5)
    with pytest.raises(PromptError, match="not 'a'"):
        prior.log_prob("a", prompt, index=1)
    with pytest.raises(PromptError, match="outside"):
        prior.log_prob("a", prompt, index=9)
    np.testing.assert_allclose(
        prior.priors_for(prompt, ["a@2", "doctor"], True)[0],
        torch_log_prob(model, tokenizer, "a", "a riding <a> horse"),
        atol=2e-5,
    )


@pytest.mark.parametrize(
    "word, prompt, message",
    [
        ("zebra", None, "cannot spell"),
        ("doctor", "a photo of a horse", "not a word of the prompt"),
        (",", None, "not a word"),
        ("doctor", " ".join(["photo"] * 40) + " doctor", "more than the masked LM's 40 positions"),
    ],
)
def test_prior_errors(bert, word, prompt, message):
    with pytest.raises(PromptError, match=message):
        bert[2].log_prob(word, prompt)


def test_few_compilations_for_many_queries(bert, compilations):
    prior = bert[2]
    prior.log_prob("horse")
    with compilations() as count:
        for word in ("doctor", "astronaut", "nurses", "moon"):
            prior.log_prob(word)
            prior.log_prob(word, f"a photo of the {word} on the moon" if word != "moon" else "the moon")
    assert count[0] == 0


# --- uniform, file and spec ---------------------------------------------------------------------


def test_uniform_prior():
    np.testing.assert_array_equal(uniform_log_prior(2), [math.log(0.5)] * 2)
    values = UniformPrior().evaluate("a male doctor", ["male", "doctor"], conditional=True)
    assert values.words == ("male", "doctor") and values.log_prior[0] == values.log_prior[1]
    assert "max(i1, i2)" in values.method
    with pytest.raises(ConfigError):
        uniform_log_prior(0)


def write_json(path, data):
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_file_prior_probabilities_and_logs(tmp_path):
    path = write_json(
        tmp_path / "p.json",
        {
            "format": "probability",
            "words": {"Doctor": 0.01, "male": 0.2},
            "in_context": {"a male doctor": {"male": 0.5, "doctor": 0.25}},
        },
    )
    prior = load_prior_spec(f"file:{path}")
    assert isinstance(prior, FilePrior)
    np.testing.assert_allclose(prior.priors_for("a male doctor", ["male", "doctor"], False), np.log([0.2, 0.01]))
    np.testing.assert_allclose(prior.priors_for("a male doctor", ["male", "doctor"], True), np.log([0.5, 0.25]))
    logs = write_json(tmp_path / "l.json", {"format": "log_probability", "words": {"male": -1.5, "doctor": 0}})
    np.testing.assert_allclose(FilePrior(logs).priors_for("a male doctor", ["doctor", "male"], False), [0.0, -1.5])
    with pytest.raises(PromptError, match="no prior for \\['horse'\\]"):
        prior.priors_for("a male horse", ["male", "horse"], False)
    with pytest.raises(PromptError, match="no 'in_context' entry"):
        prior.priors_for("a male horse", ["male", "horse"], True)


@pytest.mark.parametrize(
    "data, message",
    [
        ("{not json", "not readable as JSON"),
        ([1, 2], "expected a JSON object"),
        ({"words": {"a": 0.5}}, "'format' is None"),
        ({"format": "odds", "words": {"a": 0.5}}, "'format' is 'odds'"),
        ({"format": "probability"}, "give 'words'"),
        ({"format": "probability", "word": {"a": 0.5}}, "unknown key"),
        ({"format": "probability", "words": {"a": 1.5}}, "not a probability in \\(0, 1\\]"),
        ({"format": "probability", "words": {"a": 0}}, "not a probability"),
        ({"format": "log_probability", "words": {"a": 0.5}}, "log probability > 0"),
        ({"format": "probability", "words": {"a": "0.5"}}, "not a finite number"),
        ({"format": "probability", "words": {"a": True}}, "not a finite number"),
        ({"format": "probability", "words": {"two words": 0.5}}, "not a single word"),
        ({"format": "probability", "words": {"A": 0.5, "a": 0.4}}, "twice"),
        ({"format": "probability", "words": [0.5]}, "must be an object"),
        ({"format": "probability", "in_context": {"a b": [1]}}, "must be an object"),
    ],
)
def test_file_prior_validation(tmp_path, data, message):
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(ConfigError, match=message):
        FilePrior(path)


def test_prior_specs(bert, tmp_path):
    assert isinstance(load_prior_spec("uniform"), UniformPrior)
    prior = load_prior_spec(f"bert:{bert[3]}")
    assert isinstance(prior, MaskedLMPrior) and prior.spec == f"bert:{bert[3]}"
    jax.tree.map(np.testing.assert_array_equal, prior.params, bert[2].params)
    for bad in ("", "bert", "bert:", "uniform:0.3", "gpt:x", "file:"):
        with pytest.raises(ConfigError, match="expected 'uniform', 'bert:PATH' or 'file:PRIORS.json'"):
            load_prior_spec(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_prior_spec(f"file:{tmp_path / 'missing.json'}")
    with pytest.raises(ConfigError, match="config.json"):
        load_prior_spec(f"bert:{tmp_path}")
    with pytest.raises(ConfigError, match="other_sources"):
        load_prior_spec(f"bert:{bert[3]}", other_sources="drop")
