"""Token classification (named entities) end to end, on real review snippets whose film
titles are tagged (tests/film_titles.py): CoNLL and JSONL data, tags on each word's first
sub-token, seqeval's entity F1 in the gate. The tagger built end to end, read on the device
with entities and offsets, is the CoNLL example's (tests/test_examples.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from seqeval.metrics.sequence_labeling import get_entities

from edgefreeze.backbones import load_model
from edgefreeze.data import load_data
from edgefreeze.runtime.outputs import entity_runs
from edgefreeze.schema import DataSpec
from edgefreeze.tasks import task_for
from tests.conftest import run_cli, write_pipeline
from tests.film_titles import film_sentences, to_scheme, write_conll, write_jsonl

TAGS = task_for("token-classification")
NER = {
    "task": "token-classification",
    "data": {
        "source": "films.conll",
        "sample_rows": None,
        "max_length": 64,
        "split": {"test": 0.25, "validation": 0.1, "seed": 0, "group_column": None},
    },
    "train": {"lr_top": 3.0e-4, "lr_head": 3.0e-3},
    "export": {"split": True},
    "gate": {"max_metric_drop": 0.05, "min_agreement": 0.95, "sequence_lengths": [5, 19, 64]},
}


def read(tmp_path: Path, source: str, **settings) -> object:
    return load_data(DataSpec(source=source, **settings), TAGS, lambda p: tmp_path / p)


def test_conll_jsonl_and_csv_give_the_same_sentences(tmp_path):
    sentences = film_sentences(60)
    write_conll(tmp_path / "films.conll", sentences)
    write_jsonl(tmp_path / "films.jsonl", sentences)
    (tmp_path / "films.csv").write_text(
        "words,labels\n"
        + "".join(
            f'"{" ".join(w)}","{" ".join(t)}"\n' for w, t in sentences if '"' not in " ".join(w)
        )
    )
    conll = read(tmp_path, "films.conll")
    jsonl = read(tmp_path, "films.jsonl")
    assert conll.fingerprint() == jsonl.fingerprint()  # -DOCSTART- was skipped
    assert sorted(conll.label_names) == ["B-FILM", "I-FILM", "O"]
    every = conll.train.inputs + conll.validation.inputs + conll.test.inputs
    assert sorted(map(tuple, every)) == sorted(tuple(w) for w, _ in sentences)
    csv = read(tmp_path, "films.csv", text_column="words", label_column="labels")
    assert len(csv.train) + len(csv.validation) + len(csv.test) == sum(
        '"' not in " ".join(w) for w, _ in sentences
    )

    # The tag column is a setting: the middle column holds "_" placeholders, not tags.
    line = run_cli(
        "build",
        str(write_pipeline(tmp_path, {**NER, "data": {**NER["data"], "tag_column": 1}})),
        "--output",
        str(tmp_path / "b"),
        "--quiet",
    )
    assert line.exit_code == 2 and "tag '_' is neither O nor B-" in line.stderr
    assert "films.conll:3:" in line.stderr and len(line.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Paris B-LOC\nis\n", "films.conll:2: a token line needs a token and a tag"),
        ("Paris B-LOC\nis PER\n", "films.conll:1: tag 'PER' is neither O nor B-"),
    ],
)
def test_a_malformed_conll_file_is_one_line_and_exit_2(tmp_path, text, message):
    (tmp_path / "films.conll").write_text(text)
    result = run_cli(
        "build", str(write_pipeline(tmp_path, NER)), "--output", str(tmp_path / "b"), "--quiet"
    )
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


def test_each_word_s_label_sits_on_its_first_sub_token_only():
    loaded = load_model("builtin:all-MiniLM-L6-v2", TAGS, ["B-FILM", "I-FILM", "O"], Path, False, 0)
    words = ["The", "tearjerker", "Shrek", "opened"]
    targets = TAGS.encode_targets([["O", "O", "B-FILM", "O"]], {"B-FILM": 0, "I-FILM": 1, "O": 2})
    encoded = TAGS.encode(loaded.processor, [words], 64)
    tokens = loaded.processor.convert_ids_to_tokens(encoded.inputs["input_ids"][0].tolist())
    aligned = TAGS.aligned_targets(targets, encoded).tokens[0]
    assert len(tokens) > len(words) + 2  # some word was split into sub-tokens
    kept = [(token, int(label)) for token, label in zip(tokens, aligned) if label != -100]
    assert kept == [
        (loaded.processor.tokenize(w)[0], label) for w, label in zip(words, [2, 2, 0, 2])
    ]
    assert aligned[0] == -100 and aligned[-1] == -100  # [CLS] and [SEP]


def test_the_device_reads_entities_as_seqeval_does():
    rng = np.random.default_rng(0)
    vocabulary = ["O", "B-FILM", "I-FILM", "E-FILM", "S-FILM", "B-PER", "I-PER", "E-PER"]
    for _ in range(500):
        tags = list(rng.choice(vocabulary, size=int(rng.integers(1, 12))))
        assert entity_runs(tags) == get_entities(tags), tags


def test_entity_f1_reads_iob1_iob2_and_bioes_alike():
    """The task's metrics on the same predictions in each scheme: seqeval's default mode
    (the gate's) reads the entities alike, so the gate does not depend on the scheme."""
    sentences = film_sentences(90)
    iob2 = [tags for _, tags in sentences]
    # A partly wrong prediction: every third sentence's entities missed, every other one's
    # last word left out of its entity.
    guesses = [
        ["O"] * len(tags)
        if n % 3 == 0
        else [
            tag if n % 2 or i != max(j for j, t in enumerate(tags) if t != "O") else "O"
            for i, tag in enumerate(tags)
        ]
        if any(t != "O" for t in tags)
        else tags
        for n, tags in enumerate(iob2)
    ]
    scores = {}
    for scheme in ("IOB1", "IOB2", "BIOES"):
        truth = [to_scheme(t, scheme) for t in iob2]
        names = sorted({tag for tags in truth for tag in tags})
        index = {name: i for i, name in enumerate(names)}
        targets = TAGS.encode_targets(truth, index)
        # Outputs as a model's: one row per token, the word's tag scored highest; the
        # tokens are the words here (one each, no specials), so alignment is the identity.
        targets = replace(targets, tokens=targets.words)
        outputs = [np.eye(len(names))[[index[t] for t in to_scheme(g, scheme)]] for g in guesses]
        scores[scheme] = TAGS.metrics(outputs, targets, outputs)["entity_f1"]
        assert TAGS.score(outputs, targets) == scores[scheme]  # the sweep's fast path
    assert 0 < scores["IOB2"] < 1 and len(set(scores.values())) == 1, scores
