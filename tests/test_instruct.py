from __future__ import annotations

import itertools
import random

import polars as pl
import pytest

from cxrlabel.instruct import PromptSettings, build_prompt, instruction_table, oversample_rare, parse_completion, perturbed_instructions, sentence_instruction_table, serialize_labels, unit_table
from cxrlabel.io.labels import labels_schema
from cxrlabel.labelers.rule import RuleLabeler
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.predict import predict

CLASSES = (1, 0, -1, None)
FORMATS = ("mentioned", "full", "evidence")


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
    table = sentence_instruction_table(reports, predict(RuleLabeler(), reports), PromptSettings("mentioned", "sentence"))
    assert table["study_id"].to_list() == ["a", "a", "b", "b"]  # recurring sentences recur
    assert [p.rsplit("Sentence: ", 1)[1][: -len("\n\nLabels:\n")] for p in table["prompt"]] == ["Heart size is normal.", "No effusion.", "No effusion.", "Possible pneumonia."]
    # No Finding is a report-level label: never in a sentence's completion
    assert table["completion"].to_list() == ['{"Cardiomegaly": "negative"}', '{"Pleural Effusion": "negative"}', '{"Pleural Effusion": "negative"}', '{"Pneumonia": "uncertain"}']


def test_sentence_instructions_carry_corrected_report_labels_to_the_sentences_that_decided_them():
    """Training labels that differ from the rule labeler's (corrected by expert labels) relabel the
    sentences of the rule's class; a label no sentence mentions cannot be placed."""
    reports = pl.DataFrame({"study_id": ["a"], "text": ["Heart size is borderline. No effusion. Possible pneumonia."]})
    corrected = predict(RuleLabeler(), reports).with_columns(
        pl.lit(1, dtype=pl.Int8).alias("Cardiomegaly"), pl.lit(-1, dtype=pl.Int8).alias("Pneumonia"), pl.lit(1, dtype=pl.Int8).alias("Edema"))
    table = sentence_instruction_table(reports, corrected, PromptSettings("mentioned", "sentence"))
    assert table["completion"].to_list() == ['{"Cardiomegaly": "positive"}', '{"Pleural Effusion": "negative"}', '{"Pneumonia": "uncertain"}']


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


QUOTES = ['mild "edema"', "back\\slash \\n not a newline", "épanchement pleural ≥ 2 cm", "{\"Edema\": \"negative\"}", "it's ] , \"x\"", "x"]


def test_evidence_format_round_trips_labels_and_quotes():
    rng = random.Random(1)
    for labels in labellings():
        quotes = {name: rng.choice(QUOTES) for name, code in labels.items() if code is not None and rng.random() < 0.7}
        text = serialize_labels(labels, "evidence", quotes)
        parsed = parse_completion(text, "evidence")
        assert (parsed.labels, parsed.quotes, parsed.error) == (labels, quotes, None)
    assert "é" in serialize_labels({"Edema": 1}, "evidence", {"Edema": "é"})  # the quote keeps its characters


def test_evidence_format_writes_a_list_with_a_quote_and_the_bare_word_without():
    text = serialize_labels({"No Finding": 1, "Edema": 0, "Fracture": None}, "evidence", {"Edema": "no edema", "Fracture": "ignored: blank"})
    assert text == '{"No Finding": "positive", "Edema": ["negative", "no edema"]}'
    assert serialize_labels({"Edema": 0}, "mentioned", {"Edema": "no edema"}) == '{"Edema": "negative"}'  # other formats ignore quotes


@pytest.mark.parametrize(
    ("text", "fmt", "error", "salvaged", "quotes"),
    [
        ('{"Edema": ["positive", "edema"]}', "mentioned", "Edema: invalid value", {}, {}),  # a list is no value of another format
        ('{"Edema": ["positive", "edema"]}', "full", "Edema: invalid value", {}, {}),
        ('{"Edema": {"positive": "edema"}}', "evidence", "Edema: invalid value", {}, {}),
        ('{"Edema": ["positive"], "Fracture": "negative"}', "evidence", "Edema: invalid value", {"Fracture": 0}, {}),
        ('{"Edema": ["positive", "a", "b"]}', "evidence", "Edema: invalid value", {}, {}),
        ('{"Edema": ["positive", 3]}', "evidence", "Edema: invalid value", {}, {}),
        ('{"Edema": [["positive"], "x"]}', "evidence", "Edema: invalid value", {}, {}),
        ('{"Edema": ["blank", "x"]}', "evidence", "Edema: invalid value", {}, {}),
        ('{"Edema": ["positive", "mild edema"], "Pneumothorax": ["negative", "no pneu', "evidence", "not a JSON object", {"Edema": 1, "Pneumothorax": 0}, {"Edema": "mild edema"}),
        ('{"Edema": ["positive", "a \\"b\\" \\\\ c"], "Fr', "evidence", "not a JSON object", {"Edema": 1}, {"Edema": 'a "b" \\ c'}),
        ('{"Edema": ["positive", "mild edema"], "Pneumothorax": "negative", "Fr', "mentioned", "not a JSON object", {"Edema": 1, "Pneumothorax": 0}, {}),
    ],
)
def test_malformed_list_and_object_values_are_format_errors_never_crashes(text, fmt, error, salvaged, quotes):
    parsed = parse_completion(text, fmt)
    assert parsed.error is not None and error in parsed.error
    assert {k: v for k, v in parsed.labels.items() if v is not None} == salvaged
    assert parsed.quotes == quotes


def test_evidence_instruction_text_asks_for_the_quote():
    prompt = build_prompt("No effusion.", "evidence")
    assert "verbatim quote of the report" in prompt and "certainty alone" in prompt


def prompt_text(prompt: str, unit: str = "Report") -> str:
    return prompt.rsplit(f"{unit}: ", 1)[1].removesuffix("\n\nLabels:\n")


@pytest.mark.parametrize("lowercase", [False, True])
def test_evidence_training_quotes_are_the_rule_spans_as_the_prompt_shows_them(lowercase):
    reports = pl.DataFrame({"study_id": ["a", "b"], "text": ["Heart size is   normal.\nNo pleural \t effusion. Possible PNEUMONIA.", "Lungs are clear."]})
    labels = pl.DataFrame(
        [{"study_id": "a", "Cardiomegaly": 0, "Pleural Effusion": 0, "Pneumonia": 1}, {"study_id": "b", "No Finding": 1}], schema=labels_schema()
    )
    table = instruction_table(reports, labels, PromptSettings("evidence", lowercase=lowercase))
    a, b = (parse_completion(c, "evidence") for c in table["completion"])
    assert a.error is None and b.error is None
    # Pneumonia: the rules say uncertain, the training label positive: no quote; No Finding: none
    expected = {"Cardiomegaly": "Heart size is normal", "Pleural Effusion": "No pleural effusion"}  # the cue and the mention
    assert a.quotes == ({k: v.lower() for k, v in expected.items()} if lowercase else expected)
    assert a.labels["Pneumonia"] == 1 and b.quotes == {} and b.labels["No Finding"] == 1
    for prompt, parsed in zip(table["prompt"], (a, b)):
        assert all(quote in prompt_text(prompt) for quote in parsed.quotes.values())


@pytest.mark.parametrize("lowercase", [False, True])
def test_evidence_sentence_instructions_quote_each_sentence(lowercase):
    reports = pl.DataFrame({"study_id": ["a"], "text": ["Heart size is normal. No  pleural effusion or\tpneumothorax. Possible Pneumonia."]})
    table = sentence_instruction_table(reports, predict(RuleLabeler(), reports), PromptSettings("evidence", "sentence", lowercase))
    parsed = [parse_completion(c, "evidence") for c in table["completion"]]
    assert [p.error for p in parsed] == [None] * 3
    assert [{k: v for k, v in p.labels.items() if v is not None} for p in parsed] == [{"Cardiomegaly": 0}, {"Pleural Effusion": 0, "Pneumothorax": 0}, {"Pneumonia": -1}]
    assert all(set(p.quotes) == {k for k, v in p.labels.items() if v is not None} for p in parsed)
    for prompt, p in zip(table["prompt"], parsed):
        assert all(quote in prompt_text(prompt, "Sentence") for quote in p.quotes.values())
    assert parsed[2].quotes["Pneumonia"] == ("possible pneumonia" if lowercase else "Possible Pneumonia")


def test_evidence_perturbed_copies_are_quoted_too():
    text = "There is no pleural effusion. Heart size is normal. Possible pneumonia."
    reports = pl.DataFrame({"study_id": ["a"], "findings": [text], "impression": [None], "text": [text]}, schema_overrides={"impression": pl.String})
    labels = pl.DataFrame([{"study_id": "a", "Pleural Effusion": 0, "Cardiomegaly": 0, "Pneumonia": -1}], schema=labels_schema())
    names = ["deid_redacted", "negation_removed", "upper_case"]
    for unit, word in (("report", "Report"), ("sentence", "Sentence")):
        copies = perturbed_instructions(reports, labels, names, 0, PromptSettings("evidence", unit))
        assert copies.height > 0
        for prompt, completion in copies.select("prompt", "completion").rows():
            parsed = parse_completion(completion, "evidence")
            assert parsed.error is None and parsed.quotes and all(q in prompt_text(prompt, word) for q in parsed.quotes.values())


def test_the_config_schema_accepts_exactly_the_completion_formats():
    from pathlib import Path

    import yaml

    from cxrlabel.instruct import COMPLETION_FORMATS

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    assert tuple(schema["properties"]["instruct"]["properties"]["format"]["enum"]) == COMPLETION_FORMATS == ("mentioned", "full", "evidence")


def test_a_salvaged_repeated_observation_keeps_its_last_pair_as_json_does():
    parsed = parse_completion('{"Edema": ["positive", "edema"], "Edema": "negative", "Fr', "evidence")
    assert parsed.labels["Edema"] == 0 and parsed.quotes == {}
