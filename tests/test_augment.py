"""Sentence splitting and reports recombined from training sentences, with the labels that follow them."""

from __future__ import annotations

import polars as pl

from cxrlabel.augment import RECOMBINED_PREFIX, recombined_reports
from cxrlabel.instruct import (
    PERTURBED_PREFIX,
    PromptSettings,
    parse_completion,
    perturbed_instructions,
    recombined_instructions,
    write_instruction_sets,
)
from cxrlabel.io.labels import labels_schema, write_labels
from cxrlabel.labelers.rule import RuleLabeler
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.text import split_sentences

TRAIN = [
    "Heart size is normal. No pleural effusion.\nSmall left pneumothorax - chest tube in place.",
    "1. Mild cardiomegaly. 2. Possible right lower lobe pneumonia.",
    "The lungs are clear. No acute cardiopulmonary abnormality.",
]


def test_sentences_break_where_reports_end_statements():
    assert split_sentences(TRAIN[0]) == ["Heart size is normal.", "No pleural effusion.", "Small left pneumothorax", "chest tube in place."]
    assert split_sentences(TRAIN[1]) == ["Mild cardiomegaly.", "Possible right lower lobe pneumonia."]
    assert split_sentences(" .  \n 1. ") == []


def test_recombined_reports_draw_whole_distinct_training_sentences_and_are_reproducible():
    reports = recombined_reports(TRAIN, 50, seed=3)
    assert reports == recombined_reports(TRAIN, 50, seed=3) and reports != recombined_reports(TRAIN, 50, seed=4)
    pool = {s if s.endswith(".") else s + "." for text in TRAIN for s in split_sentences(text)}
    lengths = {len(split_sentences(text)) for text in TRAIN}
    for report in reports:
        sentences = split_sentences(report)
        assert set(sentences) <= pool and len(set(sentences)) == len(sentences)
        assert len(sentences) in lengths
    assert len({s for report in reports for s in split_sentences(report)}) == len(pool)  # every sentence is drawn


def test_recombined_labels_are_the_rule_labelers_and_follow_the_sentences():
    table = recombined_instructions(TRAIN, 40, seed=0, prompt=PromptSettings("mentioned"))
    assert table.height == 40 and table["study_id"][0] == f"{RECOMBINED_PREFIX}000000"
    rule = RuleLabeler()
    for prompt, completion in zip(table["prompt"], table["completion"]):
        report = prompt.split("Report: ", 1)[1].rsplit("\n\nLabels:", 1)[0]
        labels = parse_completion(completion, "mentioned").labels
        assert labels == rule.label(report)
        by_sentence = [rule.label(sentence) for sentence in split_sentences(report)]
        for name in OBSERVATIONS[1:]:  # positive > uncertain > negative over the sentences
            found = {s[name] for s in by_sentence if s[name] is not None}
            assert labels[name] == next((c for c in (1, -1, 0) if c in found), None)


def test_only_the_training_split_gets_recombined_reports(tmp_path):
    reports = pl.DataFrame({"study_id": ["a", "b", "c", "d"], "split": ["train", "train", "train", "validate"], "text": [*TRAIN, "No effusion."]})
    labels = pl.DataFrame([{"study_id": s, "Edema": e} for s, e in zip("abcd", (0, 1, None, 0))], schema=labels_schema())
    reports.write_parquet(tmp_path / "reports.parquet")
    write_labels(labels, tmp_path / "labels.parquet", "full")
    out = {split: str(tmp_path / f"{split}.parquet") for split in ("train", "validate")}
    write_instruction_sets(str(tmp_path / "reports.parquet"), str(tmp_path / "labels.parquet"), PromptSettings("mentioned"), out, recombined=7, seed=0)
    train, validate = (pl.read_parquet(out[split]) for split in ("train", "validate"))
    assert train.height == 3 + 7 and train["study_id"].str.starts_with(RECOMBINED_PREFIX).sum() == 7
    assert validate["study_id"].to_list() == ["d"]


def test_perturbed_copies_add_what_a_perturbation_changed_with_the_reports_labels_and_the_controls_flips():
    reports = pl.DataFrame({
        "study_id": ["a", "b"],
        "findings": ["There is no pneumothorax. Heart size is normal.", "Status post ___. Lungs are clear."],
        "impression": [None, None],
        "text": ["There is no pneumothorax. Heart size is normal.", "Status post ___. Lungs are clear."],
    })
    labels = pl.DataFrame([{"study_id": "a", "Pneumothorax": 0, "Cardiomegaly": 0}, {"study_id": "b", "Lung Opacity": 1}], schema=labels_schema())
    names = ["deid_redacted", "negation_removed"]
    sentences = perturbed_instructions(reports, labels, names, seed=0, prompt=PromptSettings("mentioned", unit="sentence"))
    assert sentences["study_id"].to_list() == [f"{PERTURBED_PREFIX}deid_redacted-b", f"{PERTURBED_PREFIX}negation_removed-a"]
    assert "Sentence: Status post [REDACTED]." in sentences["prompt"][0]
    assert set(parse_completion(sentences["completion"][0], "mentioned").labels.values()) == {None}
    assert "Sentence: There is pneumothorax." in sentences["prompt"][1]
    assert parse_completion(sentences["completion"][1], "mentioned").labels["Pneumothorax"] == 1
    whole = perturbed_instructions(reports, labels, names, seed=0, prompt=PromptSettings("mentioned"))
    copied = [parse_completion(c, "mentioned").labels for c in whole["completion"]]
    assert copied[0]["Lung Opacity"] == 1  # the report's own labels: a meaning-preserving copy keeps them
    assert (copied[1]["Pneumothorax"], copied[1]["Cardiomegaly"]) == (1, 0)  # only the control's flip changes
    assert "Report: There is pneumothorax. Heart size is normal." in whole["prompt"][1]


def test_a_perturbed_sentence_carries_its_reports_corrected_label():
    """A training label corrected by expert labels (a borderline heart the experts call enlarged)
    reaches the perturbed copy of the sentence that decided it, as it reaches the clean sentence."""
    text = "Heart size is borderline, status post ___."
    reports = pl.DataFrame({"study_id": ["c"], "findings": [text], "impression": [None], "text": [text]})
    corrected = pl.DataFrame([{"study_id": "c", "Cardiomegaly": 1}], schema=labels_schema())
    copies = perturbed_instructions(reports, corrected, ["deid_redacted"], seed=0, prompt=PromptSettings("mentioned", unit="sentence"))
    assert "Sentence: Heart size is borderline, status post [REDACTED]." in copies["prompt"][0]
    assert parse_completion(copies["completion"][0], "mentioned").labels["Cardiomegaly"] == 1
