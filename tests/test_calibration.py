"""Confidence and calibration (cxrlabel.evaluation.calibration) on hand-computed cases."""

import math

import numpy as np
import polars as pl
import pytest

from cxrlabel.evaluation.calibration import (
    Calibration,
    binary_nll,
    calibrate,
    calibration_table,
    confidence,
    expected_calibration_error,
    fit_temperature,
    fitting_reference,
    label_confidences,
    label_correct,
    label_rows,
    reliability_bins,
    scores_frame,
    softmax_at,
)
from cxrlabel.observations import OBSERVATIONS


def test_confidence_is_the_softmax_at_the_chosen_class():
    logits = {1: 2.0, 0: 0.0, -1: 0.0}
    assert confidence(logits, 1) == pytest.approx(math.exp(2) / (math.exp(2) + 2))
    assert confidence(logits, 0, temperature=2.0) == pytest.approx(1 / (math.e + 2))
    assert confidence({None: 1.0, 1: 1.0}, None) == pytest.approx(0.5)  # blank as a class
    labels = {"Edema": 1, "Cardiomegaly": None, "Fracture": 0}
    scores = {"Edema": logits, "Fracture": {1: 0.0, 0: 0.0, -1: 0.0}}
    assert label_confidences(scores, labels) == pytest.approx({"Edema": math.exp(2) / (math.exp(2) + 2), "Fracture": 1 / 3})
    assert label_confidences({"Edema": {0: 1.0, -1: 0.0}}, labels) == {}  # the label is not among the scored classes
    assert scores_frame(["s"], [labels], [{"Edema": {0: 1.0, -1: 0.0}}]).height == 0


def test_softmax_at_treats_minus_infinity_as_a_class_not_chosen_between():
    rows = np.array([[0.0, 0.0, -np.inf], [1.0, 1.0, 1.0]])
    assert softmax_at(rows, np.array([1, 2]), 1.0) == pytest.approx([0.5, 1 / 3])


def test_a_blank_reference_is_wrong():
    assert label_correct(1, 1) and not label_correct(1, 0) and not label_correct(1, None) and not label_correct(-1, 1)


def test_expected_calibration_error_of_a_toy_set():
    # two bins: [0, .5] holds .1 and .4 (mean .25, accuracy .5), (.5, 1] holds .6 and .9 (mean .75, accuracy 1)
    p, y = np.array([0.1, 0.4, 0.6, 0.9]), np.array([0, 1, 1, 1], dtype=bool)
    assert expected_calibration_error(p, y, n_bins=2) == pytest.approx(0.5 * 0.25 + 0.5 * 0.25)
    # one bin: |accuracy .75 - mean confidence .5|
    assert expected_calibration_error(p, y, n_bins=1) == pytest.approx(0.25)
    # perfectly calibrated within bins
    assert expected_calibration_error(np.array([0.5, 0.5, 1.0]), np.array([1, 0, 1], dtype=bool), n_bins=10) == pytest.approx(0.0)
    bins = reliability_bins(p, y, n_bins=2)
    assert bins["n"].to_list() == [2, 2] and bins["accuracy"].to_list() == [0.5, 1.0]
    assert bins["mean_confidence"].to_list() == pytest.approx([0.25, 0.75])
    assert math.isnan(expected_calibration_error(np.array([]), np.array([], dtype=bool)))


def test_fit_temperature_recovers_the_temperature_of_a_calibrated_model():
    # labels drawn from a model that is calibrated at T = 2: each argmax label is right with
    # probability softmax(z / 2) at it
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(20000, 3))
    chosen = logits.argmax(axis=1)
    correct = rng.random(len(logits)) < softmax_at(logits, chosen, 2.0)
    temperature = fit_temperature(logits, chosen, correct)
    assert temperature == pytest.approx(2.0, rel=0.05)
    assert binary_nll(softmax_at(logits, chosen, temperature), correct) < binary_nll(softmax_at(logits, chosen, 1.0), correct)
    after = expected_calibration_error(softmax_at(logits, chosen, temperature), correct)
    assert after < 0.02 < expected_calibration_error(softmax_at(logits, chosen, 1.0), correct)


def scored_reports():
    labels = [dict.fromkeys(OBSERVATIONS) | {"Edema": 1, "Fracture": 0}, dict.fromkeys(OBSERVATIONS) | {"Edema": -1}]
    scores = [{"Edema": {1: 3.0, 0: 0.0, -1: 1.0}, "Fracture": {None: 0.5, 1: 0.0, 0: 2.0, -1: 0.0}}, {"Edema": {1: 1.0, 0: 0.0, -1: 1.5}}]
    return labels, scores


def test_scores_table_round_trip_to_label_rows():
    labels, scores = scored_reports()
    frame = scores_frame(["s1", "s2"], labels, scores)
    assert frame.height == 3 + 4 + 3 and frame.filter(pl.col("class").is_null()).height == 1
    reference = pl.DataFrame([dict.fromkeys(OBSERVATIONS) | {"study_id": "s1", "Edema": 1}, dict.fromkeys(OBSERVATIONS) | {"study_id": "s2", "Edema": 0}],
                             schema={"study_id": pl.String, **{n: pl.Int8 for n in OBSERVATIONS}})
    table, logits, chosen = label_rows(frame, reference)
    assert table.select("study_id", "observation", "label", "reference").rows() == [("s1", "Edema", 1, 1), ("s1", "Fracture", 0, None), ("s2", "Edema", -1, 0)]
    confidences = softmax_at(logits, chosen, 1.0)
    assert confidences == pytest.approx([confidence(scores[0]["Edema"], 1), confidence(scores[0]["Fracture"], 0), confidence(scores[1]["Edema"], -1)])
    calibration = calibrate("bert", frame, reference, "gold", n_bins=5)
    assert calibration.n_labels == 3 and calibration.temperature > 0
    table9, bins = calibration_table([(calibration, frame)], reference, "gold", n_bins=5)
    assert table9["accuracy"].to_list() == pytest.approx([1 / 3]) and bins.height == 10
    assert table9["ece_before"].to_list() == pytest.approx([expected_calibration_error(confidences, np.array([True, False, False]), 5)])


def test_calibration_record_round_trip(tmp_path):
    record = Calibration("sft", 1.7, "silver", 120, 0.2, 0.03, 15)
    record.save(tmp_path / "sft.calibration.json")
    assert Calibration.load(tmp_path / "sft.calibration.json") == record


def test_fitting_reference_is_gold_only_when_it_is_four_class_and_covers_validate():
    gold, silver = pl.DataFrame({"study_id": ["a", "b"]}), pl.DataFrame({"study_id": ["a", "b", "c"]})
    assert fitting_reference(gold, "full", silver, ["a", "b"])[0] == "gold"
    assert fitting_reference(gold, "full", silver, ["a", "c"])[0] == "silver"
    assert fitting_reference(gold, "positive_only", silver, ["a"])[0] == "silver"


def test_predicted_scores_written_and_read_back_give_each_labels_logits(tmp_path):
    from cxrlabel.labelers import Labeled
    from cxrlabel.predict import predict_scored, scores_path

    labels, scores = scored_reports()

    class Scripted:
        name = "scripted"
        provides_scores = True

        def label_batch(self, texts):
            return [Labeled(labels[int(t)], scores=scores[int(t)]) for t in texts]

    reports = pl.DataFrame({"study_id": ["s1", "s2"], "text": ["0", "1"]})
    predictions, table = predict_scored(Scripted(), reports, chunk_size=1)
    assert predictions["Edema"].to_list() == [1, -1]
    path = scores_path(str(tmp_path / "predictions/bert.parquet"))
    assert path.endswith("predictions/bert_scores.parquet")
    (tmp_path / "predictions").mkdir()
    table.write_parquet(path)
    back = pl.read_parquet(path)
    assert back.schema == pl.Schema({"study_id": pl.String, "observation": pl.String, "label": pl.Int8, "class": pl.Int8, "logit": pl.Float64})
    read = {(s, o): {} for s, o in back.select("study_id", "observation").rows()}
    for s, o, _, c, z in back.rows():
        read[(s, o)][c] = z
    assert read == {("s1", "Edema"): scores[0]["Edema"], ("s1", "Fracture"): scores[0]["Fracture"], ("s2", "Edema"): scores[1]["Edema"]}

    class Unscored(Scripted):
        provides_scores = False

        def label_batch(self, texts):
            return [Labeled(labels[int(t)]) for t in texts]

    assert predict_scored(Unscored(), reports)[1] is None
    assert predict_scored(Scripted(), reports.clear())[1].is_empty()  # a share with no report: an empty table, not none


def test_the_workflow_steps_fit_on_validate_and_measure_on_test(tmp_path):
    """calibrate_split and calibration_tables on files: gold when it is 4-class and covers validate,
    the test split measured against its gold, and the reliability figure drawn from their output."""
    from cxrlabel.evaluation.calibration import calibrate_split, calibration_tables
    from cxrlabel.evaluation.figures import FigureStyle, reliability_diagram
    from cxrlabel.io.labels import LABEL_KIND_KEY

    rng = np.random.default_rng(1)
    ids = [f"s{i:03d}" for i in range(200)]
    pl.DataFrame({"study_id": ids, "split": ["validate"] * 100 + ["test"] * 100}).write_parquet(tmp_path / "reports.parquet")
    labels = pl.DataFrame({"study_id": ids, **{n: [None] * 200 for n in OBSERVATIONS}}, schema={"study_id": pl.String, **{n: pl.Int8 for n in OBSERVATIONS}})
    labels.write_parquet(tmp_path / "silver.parquet", metadata={LABEL_KIND_KEY: '"full"'})
    logits = rng.normal(0, 4, size=(200, 3))  # overconfident: right with probability softmax(z / 3)
    codes = [1, 0, -1]
    # the label is the argmax; the truth is the next class where the label is to be wrong
    right = rng.random(200) < softmax_at(logits, logits.argmax(axis=1), 3.0)
    truth_of = {ids[i]: codes[k] if right[i] else codes[(k + 1) % 3] for i, k in enumerate(logits.argmax(axis=1))}
    labels.with_columns(pl.Series("Edema", [truth_of[s] for s in ids], dtype=pl.Int8)).write_parquet(tmp_path / "gold.parquet", metadata={LABEL_KIND_KEY: '"full"'})
    scores = scores_frame(ids, [{"Edema": codes[row.argmax()]} for row in logits], [{"Edema": dict(zip(codes, row))} for row in logits])
    scores.write_parquet(tmp_path / "scores.parquet")
    files = [str(tmp_path / f) for f in ("scores.parquet", "reports.parquet", "gold.parquet", "silver.parquet")]
    calibration = calibrate_split("sft", *files, n_bins=10)
    assert calibration.fitted_on == "gold" and calibration.n_labels == 100 and calibration.temperature > 1.5
    assert calibration.ece_after < calibration.ece_before
    with pytest.raises(ValueError, match="never"):
        calibrate_split("sft", *files, n_bins=10, split="test")
    calibration.save(tmp_path / "sft.calibration.json")
    table, bins = calibration_tables(["sft"], [str(tmp_path / "sft.calibration.json")], [files[0]], *files[1:], n_bins=10)
    assert table.columns == ["labeler", "fitted_on", "temperature", "evaluated_on", "n_labels", "ece_before", "ece_after", "accuracy", "mean_confidence_before", "mean_confidence_after"]
    assert table.row(0, named=True)["n_labels"] == 100 and table["evaluated_on"].to_list() == ["gold"]
    assert table["ece_after"][0] < table["ece_before"][0] and bins.height == 20
    reliability_diagram(bins, table, {"sft": "LLM (SFT)"}, FigureStyle(), str(tmp_path / "reliability.png"))
    assert (tmp_path / "reliability.png").stat().st_size > 10_000
