"""Perturbations of report form (cxrlabel.perturb), the flip-rate metrics and the robustness rows."""

from __future__ import annotations

import doctest
import random

import numpy as np
import polars as pl
import pytest

from cxrlabel import perturb
from cxrlabel.evaluation.metrics import expected_flip_rate, label_flip_rate
from cxrlabel.evaluation.robustness import perturbed_predictions, robustness_row, robustness_table
from cxrlabel.io.labels import LABEL_KIND_KEY
from cxrlabel.labelers.rule import RuleLabeler
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.perturb import CONTROLS, PERTURBATIONS, Report, perturb_reports, perturbed_reports_table
from cxrlabel.predict import predict, predict_perturbed, write_predictions

LABELER = RuleLabeler()

# Hand-written reports in the forms of the corpora (sections as ingestion stores them).
REPORTS = [
    Report(
        "The heart is normal in size. There is no evidence of pneumothorax. Lungs are clear with no focal consolidation. "
        "1. No acute cardiopulmonary process. 2. Stable XXXX in the right chest wall.",
        "The heart is normal in size. There is no evidence of pneumothorax. Lungs are clear with no focal consolidation.",
        "1. No acute cardiopulmonary process. 2. Stable XXXX in the right chest wall.",
    ),
    Report(
        "Mild cardiomegaly. Left basilar opacity may represent atelectasis. Pneumonia cannot be excluded. "
        "No pleural effusion. Possible small left pleural effusion is not seen. Cardiomegaly. Opacity, possibly atelectasis.",
        "Mild cardiomegaly. Left basilar opacity may represent atelectasis. Pneumonia cannot be excluded. No pleural effusion.",
        "Possible small left pleural effusion is not seen. Cardiomegaly. Opacity, possibly atelectasis.",
    ),
    Report(
        "Endotracheal tube terminates 4 cm above the carina. Dr. ___ was notified at ___. Pneumothorax is not identified. "
        "No change in the right pleural effusion. Cannot exclude early edema.",
        None,
        "Endotracheal tube terminates 4 cm above the carina. Dr. ___ was notified at ___. Pneumothorax is not identified. "
        "No change in the right pleural effusion. Cannot exclude early edema.",
    ),
    Report("Negative for pneumothorax. Heart size is top normal. Lungs are clear without effusion. Suspicious for pneumonia."),
]


def test_every_docstring_example_holds():
    assert doctest.testmod(perturb).failed == 0


@pytest.mark.parametrize(
    ("style", "expected"),
    [("underscore", "Dr. ___ at ___ ___."), ("xxxx", "Dr. XXXX at XXXX XXXX."), ("redacted", "Dr. [REDACTED] at [REDACTED] [REDACTED]."),
     ("name", "Dr. **NAME[AAA]** at **NAME[AAA]** **NAME[AAA]**.")],
)
def test_deid_rewrites_every_placeholder_style(style, expected):
    assert perturb.deid_style("Dr. XXXX at ___ [REDACTED].", style) == expected


def test_case_and_whitespace_change_only_the_form():
    text = "No pneumothorax. Heart size is normal."
    assert perturb.upper_case(text) == text.upper() and perturb.lower_case(text) == text.lower()
    spaced = perturb.crlf_whitespace(text, random.Random(3))
    assert "\r\n" in spaced and spaced.split() == text.split()


def test_impression_numbering_goes_both_ways():
    numbered = REPORTS[0]
    prose = perturb.impression_numbering(numbered)
    assert prose.endswith("No acute cardiopulmonary process. Stable XXXX in the right chest wall.")
    assert prose.startswith(numbered.findings)
    again = perturb.impression_numbering(Report(prose, numbered.findings, prose[len(numbered.findings) + 1 :]))
    assert again == numbered.text
    # "rib 5. " is not an item: only markers counting up from 1 are
    assert perturb.numbered_items("1. Fracture of rib 5. No effusion 2. Stable.") == ["Fracture of rib 5. No effusion", "Stable."]


def test_section_order_swaps_only_reports_with_both_sections():
    swapped = perturb.section_order(REPORTS[0])
    assert swapped.startswith(REPORTS[0].impression) and swapped.endswith(REPORTS[0].findings)
    assert perturb.section_order(REPORTS[2]) == REPORTS[2].text


def test_paraphrases_keep_pseudo_negations_and_attributes():
    rng = random.Random(0)
    assert perturb.negation_paraphrase("No change in the effusion. Stable without change.", rng) == "No change in the effusion. Stable without change."
    assert perturb.uncertainty_paraphrase("The heart is possibly enlarged.", rng) == "The heart is possibly enlarged."
    assert perturb.negation_paraphrase("Negative for pneumothorax.", rng) in ("No evidence of pneumothorax.", "No signs of pneumothorax.")


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_same_seed_same_perturbation(name):
    frame = reports_frame()
    assert perturb_reports(frame, name, seed=7).equals(perturb_reports(frame, name, seed=7))


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_rule_labeler_flips_nothing_under_meaning_preserving_perturbations(name):
    """The measured claim: rewriting the form of these reports changes none of the rule labeler's labels."""
    perturbed = perturb_reports(reports_frame(), name, seed=0)
    assert perturbed["changed"].any(), name
    for report, text in zip(REPORTS, perturbed["text"]):
        assert LABELER.label(text) == LABELER.label(report.text), (name, text)


def test_control_removes_a_negation_and_expects_the_flip():
    text, expected = perturb.remove_negation("There is no pneumothorax.", random.Random(0))
    assert text == "There is pneumothorax." and expected == ["Pneumothorax"]
    assert LABELER.label(text)["Pneumothorax"] == 1 and LABELER.label("There is no pneumothorax.")["Pneumothorax"] == 0
    assert perturb.remove_negation("Mild cardiomegaly.", random.Random(0)) == ("Mild cardiomegaly.", [])


def test_controls_table_records_expected_flips():
    perturbed = perturb_reports(reports_frame(), "negation_removed", seed=0)
    assert set(CONTROLS) == {"negation_removed"} and perturbed["changed"].all()
    for text, flips in zip(perturbed["text"], perturbed["expected_flips"]):
        assert flips.len() >= 1, text


def test_flip_rate_counts_blank_as_a_class():
    clean = np.array([[1.0, np.nan, 0.0], [np.nan, -1.0, 1.0]])
    perturbed = np.array([[1.0, 0.0, 0.0], [np.nan, -1.0, np.nan]])
    assert label_flip_rate(clean, perturbed) == pytest.approx(2 / 6)
    expected = np.array([[False, True, True], [False, False, False]])
    assert expected_flip_rate(clean, perturbed, expected) == pytest.approx(1 / 2)
    assert np.isnan(expected_flip_rate(clean, perturbed, np.zeros_like(expected)))


def test_robustness_row_states_a_miss():
    reports = perturb_reports(reports_frame(), "upper_case", seed=0)
    clean = labels_frame(reports["study_id"], [LABELER.label(r.text) for r in REPORTS])
    flipped = clean.with_columns(pl.when(pl.col("study_id") == "s0").then(1).otherwise(pl.col("Pneumothorax")).cast(pl.Int8).alias("Pneumothorax"))
    row = robustness_row("sft", "upper_case", clean, flipped, reports, clean.select("study_id", *OBSERVATIONS), "full", 0.01)
    assert row["flip_rate"] == pytest.approx(1 / (14 * len(REPORTS))) and row["passes"] is False and row["verdict"].startswith("MISSES")
    assert row["clean_f1"] == pytest.approx(1.0) and row["perturbed_f1"] < 1.0


def test_perturbed_reports_table_holds_every_perturbation_in_long_format():
    names = ["upper_case", "section_order", "negation_removed"]
    table = perturbed_reports_table(reports_frame(), names, seed=0)
    assert table.height == len(names) * len(REPORTS) and table["perturbation"].unique(maintain_order=True).to_list() == names
    assert table.filter(pl.col("perturbation") == "section_order").equals(perturb_reports(reports_frame(), "section_order", seed=0))


class CountingRuleLabeler(RuleLabeler):
    """The rule labeler, remembering every text it was asked to label."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def label_batch(self, texts):
        self.seen.extend(texts)
        return super().label_batch(texts)


def test_predict_perturbed_labels_each_changed_text_once_with_its_perturbation():
    perturbed = pl.DataFrame({
        "study_id": ["s0", "s1", "s0", "s1", "s0", "s1"],
        "perturbation": ["upper_case", "upper_case", "lower_case", "lower_case", "negation_removed", "negation_removed"],
        "text": ["NO EFFUSION.", "MILD CARDIOMEGALY.", "no effusion.", "mild cardiomegaly.", "NO EFFUSION.", "Mild cardiomegaly."],
        "changed": [True, True, True, False, True, False],
    })
    labeler = CountingRuleLabeler()
    predicted = predict_perturbed(labeler, perturbed, chunk_size=2)
    # unchanged rows are not labeled; "NO EFFUSION." (two perturbations) is labeled once
    assert sorted(labeler.seen) == sorted(["NO EFFUSION.", "MILD CARDIOMEGALY.", "no effusion."])
    assert predicted.select("study_id", "perturbation").rows() == [
        ("s0", "upper_case"), ("s1", "upper_case"), ("s0", "lower_case"), ("s0", "negation_removed")]
    clean_schema = predict(RuleLabeler(), perturbed.head(1).select("study_id", "text")).schema
    assert predicted.columns == ["study_id", "perturbation", *list(clean_schema)[1:]] and predicted.schema["Pleural Effusion"] == pl.Int8
    expected = [RuleLabeler().label(t) for t in perturbed.filter("changed")["text"]]
    assert [{o: row[o] for o in OBSERVATIONS} for row in predicted.iter_rows(named=True)] == [{o: e[o] for o in OBSERVATIONS} for e in expected]


def test_perturbed_predictions_keep_the_clean_labels_of_unchanged_reports():
    reports = pl.DataFrame({"study_id": ["s0", "s1", "s2"], "changed": [True, False, True]})
    clean = labels_frame(reports["study_id"], [RuleLabeler().label(t) for t in ("No effusion.", "Effusion.", "Cardiomegaly.")])
    relabeled = labels_frame(pl.Series(["s0", "s2"]), [RuleLabeler().label(t) for t in ("Effusion.", "Cardiomegaly.")])
    predictions = perturbed_predictions(reports, clean, relabeled).sort("study_id")
    assert predictions["Pleural Effusion"].to_list() == [1, 1, None] and predictions.columns == clean.columns
    with pytest.raises(ValueError, match="1 changed reports have no perturbed prediction"):
        perturbed_predictions(reports, clean, relabeled.head(1))


def test_robustness_table_reads_one_reports_table_and_one_prediction_table_per_labeler(tmp_path):
    frame = reports_frame()
    perturbations = ["upper_case", "section_order", "negation_removed"]
    table = perturbed_reports_table(frame, perturbations, seed=0)
    table.write_parquet(tmp_path / "reports.parquet")
    clean = predict(LABELER, frame.select("study_id", "text"))
    write_predictions(clean, str(tmp_path / "clean.parquet"))
    write_predictions(predict_perturbed(LABELER, table), str(tmp_path / "perturbed.parquet"))
    clean.select("study_id", *OBSERVATIONS).write_parquet(tmp_path / "gold.parquet", metadata={LABEL_KIND_KEY: '"full"'})
    rows = robustness_table(str(tmp_path / "gold.parquet"), {"rule": str(tmp_path / "clean.parquet")}, str(tmp_path / "reports.parquet"),
                            {"rule": str(tmp_path / "perturbed.parquet")}, {"rule": 0.01}, 0.95)
    assert rows["perturbation"].to_list() == perturbations and (rows["reports"] == len(REPORTS)).all()
    assert rows["changed_reports"].to_list() == [table.filter(pl.col("perturbation") == p)["changed"].sum() for p in perturbations]
    preserving = rows.filter("meaning_preserving")
    assert (preserving["flip_rate"] == 0).all() and (preserving["flip_rate_all"] == 0).all() and preserving["passes"].all()
    control = rows.filter(~pl.col("meaning_preserving")).row(0, named=True)
    assert control["flip_rate"] == pytest.approx(1.0) and control["passes"] and control["perturbed_f1"] is None


def reports_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {"study_id": [f"s{i}" for i in range(len(REPORTS))], "split": "test", "findings": [r.findings for r in REPORTS],
         "impression": [r.impression for r in REPORTS], "text": [r.text for r in REPORTS], "n_tokens": 0},
        schema_overrides={"findings": pl.String, "impression": pl.String, "n_tokens": pl.Int32},
    )


def labels_frame(study_ids: pl.Series, labels: list[dict]) -> pl.DataFrame:
    rows = [{"study_id": s, **{o: label[o] for o in OBSERVATIONS}, "format_error": False, "fallback_used": False} for s, label in zip(study_ids, labels)]
    return pl.DataFrame(rows, schema={"study_id": pl.String, **{o: pl.Int8 for o in OBSERVATIONS}, "format_error": pl.Boolean, "fallback_used": pl.Boolean})
