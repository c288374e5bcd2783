from __future__ import annotations

import itertools
import random

import polars as pl
import pytest

from cxrlabel.instruct import PromptSettings, build_prompt, instruction_table, oversample_rare, parse_completion, sentence_instruction_table, serialize_labels, unit_table
from cxrlabel.io.labels import labels_schema
from cxrlabel.observations import OBSERVATIONS

CLASSES = (1, 0, -1, None)
FORMATS = ("mentioned", "full")


def labellings():
    """Every observation in every class (others blank and others random), uniform ones, and random mixes."""
    yield {name: None for name in OBSERVATIONS}
    for value in CLASSES:
        yield {name: value for name in OBSERVATIONS}
    rng = random.Random(0)
    for name, value in itertools.product(OBSERVATIONS, CLASSES):
        yield {other: None for other in OBSERVATIONS} | {name: value}
        yield {other: rng.choice(CLASSES) for other in OBSERVATIONS} | {name: value}
    for _ in range(500):
        yield {name: rng.choice(CLASSES) for name in OBSERVATIONS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_parse_inverts_serialize(fmt):
    for labels in labellings():
        parsed = parse_completion(serialize_labels(labels, fmt), fmt)
        assert parsed.error is None and parsed.labels == labels


def test_mentioned_format_lists_only_mentioned_observations():
    text = serialize_labels({name: None for name in OBSERVATIONS} | {"Edema": -1, "No Finding": None, "Cardiomegaly": 0}, "mentioned")
    assert text == '{"Cardiomegaly": "negative", "Edema": "uncertain"}'
    assert serialize_labels({name: None for name in OBSERVATIONS}, "mentioned") == "{}"


def test_full_format_has_all_fourteen_in_canonical_order():
    text = serialize_labels({"Edema": 1}, "full")
    assert text.startswith('{"No Finding": "blank", "Enlarged Cardiomediastinum": "blank"')
    assert text.count(":") == 14


def test_trailing_text_after_the_object_is_ignored():
    parsed = parse_completion('{"Edema": "positive"}\nLabels: {"Edema": "negative"}', "mentioned")
    assert parsed.error is None and parsed.labels["Edema"] == 1


@pytest.mark.parametrize(
    ("text", "fmt", "error", "salvaged"),
    [
        ('{"Edema": "positive", "Pneumo', "mentioned", "not a JSON object", {"Edema": 1}),
        ('no json here', "mentioned", "not a JSON object", {}),
        ('{"Edema": "present"}', "mentioned", "Edema: invalid value 'present'", {}),
        ('{"Edema": "blank"}', "mentioned", "Edema: invalid value 'blank'", {}),
        ('{"Hernia": "positive", "Edema": "negative"}', "mentioned", "unknown observation 'Hernia'", {"Edema": 0}),
        ('{"Edema": "positive"}', "full", "missing [", {"Edema": 1}),
        ('{"Edema": 1}', "mentioned", "Edema: invalid value 1", {}),
    ],
)
def test_malformed_completions_are_reported_with_what_could_be_salvaged(text, fmt, error, salvaged):
    parsed = parse_completion(text, fmt)
    assert parsed.error is not None and error in parsed.error
    assert {k: v for k, v in parsed.labels.items() if v is not None} == salvaged
    assert set(parsed.labels) == set(OBSERVATIONS)


def test_prompt_holds_the_report_on_one_line():
    prompt = build_prompt("Heart is\nenlarged.  No effusion.", "mentioned")
    assert prompt.endswith("Report: Heart is enlarged. No effusion.\n\nLabels:\n")


def test_instruction_table_pairs_reports_with_their_labels_in_report_order():
    reports = pl.DataFrame({"study_id": ["b", "a", "c"], "text": ["Edema.", "Clear.", "No labels."]})
    labels = pl.DataFrame(
        [{"study_id": "a", "No Finding": 1}, {"study_id": "b", "Edema": 1}], schema=labels_schema()
    )
    table = instruction_table(reports, labels, PromptSettings("mentioned"))
    assert table["study_id"].to_list() == ["b", "a"]
    assert table["completion"].to_list() == ['{"Edema": "positive"}', '{"No Finding": "positive"}']


def test_report_unit_prompts_are_the_papers_and_sentence_prompts_say_sentence():
    assert build_prompt("No effusion.", "mentioned").startswith(
        "Label the chest X-ray report for the 14 CheXpert observations. Answer with a JSON object that maps "
        "each observation the report mentions to positive, negative or uncertain; leave out the others.\n\nReport: "
    )
    prompt = build_prompt("No effusion.", "mentioned", "sentence")
    assert "each observation the sentence mentions" in prompt and prompt.endswith("Sentence: No effusion.\n\nLabels:\n")


def test_sentence_instructions_pair_every_sentence_with_the_rule_labels_of_its_mentions():
    reports = pl.DataFrame({"study_id": ["a", "b"], "text": ["Heart size is normal. No effusion.", "No effusion. Possible pneumonia."]})
    table = sentence_instruction_table(reports, PromptSettings("mentioned", "sentence"))
    assert table["study_id"].to_list() == ["a", "a", "b", "b"]  # recurring sentences recur
    assert [p.rsplit("Sentence: ", 1)[1][: -len("\n\nLabels:\n")] for p in table["prompt"]] == ["Heart size is normal.", "No effusion.", "No effusion.", "Possible pneumonia."]
    # No Finding is a report-level label: never in a sentence's completion
    assert table["completion"].to_list() == ['{"Cardiomegaly": "negative"}', '{"Pleural Effusion": "negative"}', '{"Pleural Effusion": "negative"}', '{"Pneumonia": "uncertain"}']


def test_unit_table_holds_each_distinct_text_once_with_its_first_report():
    reports = pl.DataFrame({"study_id": ["a", "b"], "text": ["No effusion. Clear lungs.", "Edema. No effusion."]})
    assert unit_table(reports, "sentence").rows() == [("a", 0, "No effusion."), ("a", 1, "Clear lungs."), ("b", 0, "Edema.")]
    assert unit_table(reports, "report").rows() == [("a", 0, "No effusion. Clear lungs."), ("b", 0, "Edema. No effusion.")]


def test_rare_label_classes_are_repeated_up_to_the_cap():
    edema, pneumothorax, nothing = '{"Edema": "positive"}', '{"Pneumothorax": "positive", "Edema": "positive"}', "{}"
    table = pl.DataFrame({"study_id": list("abcdefg"), "prompt": list("abcdefg"), "completion": [edema] * 4 + [pneumothorax, nothing, nothing]})
    # classes: Edema+ in 5, Pneumothorax+ in 1; median class count 5: the pneumothorax instance 5x, capped at 3
    assert oversample_rare(table, "mentioned", 3)["study_id"].to_list() == ["a", "b", "c", "d", "e", "e", "e", "f", "g"]
    assert oversample_rare(table, "mentioned", 1).equals(table)


def test_lower_case_prompts_lower_only_the_report_text():
    prompt = PromptSettings("mentioned", "sentence", lowercase=True).build("No Pleural EFFUSION.")
    assert prompt.startswith("Label the sentence") and prompt.endswith("Sentence: no pleural effusion.\n\nLabels:\n")
    assert PromptSettings("mentioned").build("No EFFUSION.") == build_prompt("No EFFUSION.", "mentioned")
