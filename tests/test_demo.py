from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from cxrlabel.ingest import ingest_mimic
from cxrlabel.io.demo import DemoSpec, draw_labels, render_sentences, write_demo_corpus
from cxrlabel.observations import NO_FINDING, PATHOLOGIES

SPEC = DemoSpec(n_studies=400, seed=3)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    return write_demo_corpus(tmp_path_factory.mktemp("demo"), SPEC)


@pytest.fixture(scope="module")
def corpus(demo):
    return ingest_mimic(**{k: str(v) for k, v in demo.items()}, source="demo", strict=True)


def test_demo_corpus_ingests_without_a_single_drop(corpus):
    assert corpus.reports.height == SPEC.n_studies and corpus.drops.rows == []
    assert corpus.silver.height == SPEC.n_studies
    assert set(corpus.gold["study_id"]) == set(corpus.reports.filter(pl.col("split") != "train")["study_id"])


def test_demo_corpus_is_deterministic(demo, tmp_path):
    again = write_demo_corpus(tmp_path, SPEC)
    assert all(again[name].read_bytes() == path.read_bytes() for name, path in demo.items())


def test_demo_corpus_has_every_construction(corpus):
    text = " ".join(corpus.reports["text"]).lower()
    for phrase in ("no ", " or ", "cannot be excluded", "may represent", "possible", "heart size is normal", "resolved", "pericardial effusion"):
        assert phrase in text, phrase
    assert set(corpus.reports["text_source"]) == {"sections", "last_section"}


def test_some_demo_reports_are_longer_than_bert_reads(corpus):
    from transformers import AutoTokenizer

    from cxrlabel.labelers.bert import packaged_encoder

    tokenizer = AutoTokenizer.from_pretrained(packaged_encoder())
    lengths = [len(ids) for ids in tokenizer(corpus.reports["text"].to_list())["input_ids"]]
    assert sum(n > 512 for n in lengths) >= 0.02 * len(lengths)


def test_gold_follows_the_no_finding_rule(corpus):
    for row in corpus.gold.iter_rows(named=True):
        finding = any(row[name] in (1, -1) for name in PATHOLOGIES)
        assert row[NO_FINDING] == (None if finding else 1)


def test_silver_is_truth_with_a_little_noise(corpus):
    gold = corpus.gold.sort("study_id")
    silver = corpus.silver.join(gold.select("study_id"), on="study_id").sort("study_id")
    cells = [(g, s) for name in PATHOLOGIES for g, s in zip(gold[name], silver[name])]
    disagreement = sum(g != s for g, s in cells) / len(cells)
    assert 0 < disagreement < 3 * SPEC.silver_noise


def test_each_stated_observation_gets_one_sentence():
    rng = random.Random(1)
    for _ in range(200):
        labels = draw_labels(rng, SPEC)
        sentences = render_sentences(labels, rng)
        stated = sum(value is not None for name, value in labels.items() if name != NO_FINDING)
        assert len(sentences) <= stated and (stated == 0) == (sentences == [])
