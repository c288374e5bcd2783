"""Expert labels as a training signal: the corrected training labels, their place in the sentence
labels, the expert labels a trainer may learn from, the labels models are chosen on, and the
learned No Finding stage."""

from __future__ import annotations

import itertools
import json

import numpy as np
import polars as pl
import pytest

from cxrlabel.io.labels import labels_schema, write_chexpert_csv, write_labels
from cxrlabel.io.records import BadInputError
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.training.selection import selection_reference
from cxrlabel.training.targets import ExpertLabels, corrected_label, corrected_labels, expert_training_sets, sentence_targets, write_targets

P, N, U, B = 1, 0, -1, None


@pytest.mark.parametrize(
    ("silver", "expert", "target"),
    [
        (U, P, P),  # hedged, counted present by the experts: positive
        (B, P, P),
        (N, P, P),
        (P, P, P),
        (P, B, U),  # mentioned, not counted present: not positive, and not claimed absent
        (N, B, N),  # an absent index term says nothing about negative, uncertain or blank
        (U, B, U),
        (B, B, B),
    ],
)
def test_positive_only_expert_labels_decide_positive_or_not_and_silver_the_rest(silver, expert, target):
    assert corrected_label(silver, expert, "positive_only", "Edema") == target


def test_no_finding_is_the_experts_and_full_expert_labels_replace_silver():
    assert corrected_label(P, B, "positive_only", "No Finding") is None  # indexed with findings: not normal
    assert corrected_label(B, P, "positive_only", "No Finding") == P
    for silver, expert in [(P, N), (N, U), (U, B), (B, P)]:
        assert corrected_label(silver, expert, "full", "Edema") == expert


def test_corrected_labels_change_only_expert_labeled_reports_and_count_the_moves():
    row = lambda study, **labels: {"study_id": study, **{name: None for name in OBSERVATIONS}, **labels}  # noqa: E731
    silver = pl.DataFrame([row("a", Edema=U), row("b", Edema=P), row("c", Edema=P)], schema=labels_schema(), orient="row")
    expert = pl.DataFrame([row("a", Edema=P), row("b"), row("x", Cardiomegaly=P)], schema=labels_schema(), orient="row")
    corrected, moves = corrected_labels(silver, [ExpertLabels(expert, "positive_only", "gold")])
    assert corrected["study_id"].to_list() == ["a", "b", "c", "x"]
    assert corrected["Edema"].to_list() == [P, U, P, None] and corrected["Cardiomegaly"].to_list() == [None, None, None, P]
    assert moves.summary() == {"Edema": {"positive -> uncertain": 1, "uncertain -> positive": 1}}


def test_sentence_labels_are_relabeled_where_they_decided_the_report_label():
    sentences = [{"Cardiomegaly": U}, {"Pleural Effusion": N}, {"Pleural Effusion": N, "Cardiomegaly": U}, {"Pneumonia": P}]
    target = {name: None for name in OBSERVATIONS} | {"Cardiomegaly": P, "Pleural Effusion": N, "Pneumonia": U, "Edema": P, "No Finding": P}
    relabeled, unplaced = sentence_targets(sentences, target)
    assert relabeled == [{"Cardiomegaly": P}, {"Pleural Effusion": N}, {"Pleural Effusion": N, "Cardiomegaly": P}, {"Pneumonia": U}]
    assert unplaced == ["Edema"]  # no sentence mentions it; No Finding is never a sentence's


@pytest.fixture
def corpus(tmp_path):
    """Reports of three splits, positive-only gold on all of them, silver labels from the rules."""
    ids = {"train": ["t1", "t2"], "validate": ["v1"], "test": ["x1"]}
    reports = pl.DataFrame([{"study_id": s, "split": split, "text": f"report {s}"} for split, studies in ids.items() for s in studies])
    reports.write_parquet(tmp_path / "reports.parquet")
    empty = {name: None for name in OBSERVATIONS}
    labels = lambda rows: pl.DataFrame([{"study_id": s, **empty, **r} for s, r in rows], schema=labels_schema(), orient="row")  # noqa: E731
    write_labels(labels([("t1", {"Edema": 1}), ("t2", {"No Finding": 1}), ("v1", {"No Finding": 1}), ("x1", {})]), tmp_path / "gold.parquet", "positive_only")
    write_labels(labels([("t1", {"Edema": -1}), ("t2", {"Edema": 1}), ("v1", {"No Finding": 1}), ("x1", {"No Finding": 1})]), tmp_path / "silver.parquet", "full")
    return tmp_path, labels


def test_only_the_train_splits_expert_labels_are_learned_from(corpus):
    tmp_path, _ = corpus
    sets, counts = expert_training_sets(str(tmp_path / "gold.parquet"), str(tmp_path / "reports.parquet"), None)
    assert [s.labels["study_id"].to_list() for s in sets] == [["t1", "t2"]] and counts == {"gold_train_reports": 2}
    write_targets(*(str(tmp_path / f) for f in ("silver.parquet", "gold.parquet", "reports.parquet")), None,
                  *(str(tmp_path / f) for f in ("all.parquet", "expert.parquet", "summary.json")))
    everything, expert = pl.read_parquet(tmp_path / "all.parquet"), pl.read_parquet(tmp_path / "expert.parquet")
    assert everything["Edema"].to_list() == [1, -1, None, None] and everything["No Finding"].to_list() == [None, 1, 1, 1]  # v1, x1 as silver
    assert expert["study_id"].to_list() == ["t1", "t2"]
    assert json.loads((tmp_path / "summary.json").read_text())["changed"]["Edema"] == {"positive -> uncertain": 1, "uncertain -> positive": 1}


def test_an_expert_labels_file_naming_a_test_study_is_refused_and_validate_rows_are_left_out(corpus):
    tmp_path, labels = corpus
    write_chexpert_csv(labels([("t2", {"Edema": 0}), ("v1", {"Edema": 1}), ("zz", {})]), tmp_path / "mine.csv")
    sets, counts = expert_training_sets(str(tmp_path / "gold.parquet"), str(tmp_path / "reports.parquet"), str(tmp_path / "mine.csv"))
    assert [(s.kind, s.labels["study_id"].to_list()) for s in sets] == [("positive_only", ["t1", "t2"]), ("full", ["t2"])]
    assert counts["file_reports"] == 1 and counts["file_rows_left_out"] == {"validate_split": 1, "unknown_study": 1}
    corrected, _ = corrected_labels(pl.read_parquet(tmp_path / "silver.parquet"), sets)
    assert corrected.filter(pl.col("study_id") == "t2")["Edema"].to_list() == [0]  # the file's full label wins
    write_chexpert_csv(labels([("t1", {}), ("x1", {"Edema": 1})]), tmp_path / "leaky.csv")
    with pytest.raises(BadInputError, match=r"leaky.csv: 1 of its studies are in the test split or the gold labels of the evaluation \(x1\)"):
        expert_training_sets(str(tmp_path / "gold.parquet"), str(tmp_path / "reports.parquet"), str(tmp_path / "leaky.csv"))


def test_models_are_chosen_on_the_experts_validate_labels_where_they_cover_it(corpus):
    tmp_path, _ = corpus
    reference = selection_reference(*(str(tmp_path / f) for f in ("reports.parquet", "silver.parquet", "gold.parquet")))
    assert (reference.source, reference.kind, reference.labels["study_id"].to_list()) == ("expert", "positive_only", ["v1"])
    assert selection_reference(str(tmp_path / "reports.parquet"), str(tmp_path / "silver.parquet")).source == "silver"
    predicted = reference.labels.with_columns(pl.lit(None, dtype=pl.Int8).alias("No Finding"))
    assert reference.score(reference.labels) == 1.0 and reference.score(predicted) == 0.0


def test_embeddings_are_minilms_sentence_embeddings():
    """The hand-written mean pooling equals sentence-transformers' embedding of the same model."""
    from sentence_transformers import SentenceTransformer

    from cxrlabel.embedding import Embedder
    from cxrlabel.labelers.bert import packaged_encoder

    texts = ["No pneumothorax.", "Degenerative changes of the thoracic spine are noted on the lateral view.", ""]
    ours = Embedder(threads=1).embed(texts, batch_size=2)
    theirs = SentenceTransformer(packaged_encoder(), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == (3, 384) and np.allclose(ours, theirs, atol=1e-5)


def test_the_no_finding_stage_learns_what_the_experts_call_abnormal(tmp_path):
    """Reports the rules would call normal, some with a finding outside the 14 observations: the
    stage learns those from the expert labels, and a labeler keeps its own rule beside it."""
    from cxrlabel.labelers.no_finding import NoFindingModel, NoFindingSettings, train_no_finding

    normal = ["The lungs are clear.", "Heart size is normal.", "No acute cardiopulmonary disease."]
    other = ["Degenerative changes of the thoracic spine.", "Calcified granuloma in the right upper lobe.", "The aorta is tortuous."]
    texts = [f"{a} {b}" for a in normal for b in normal] + [f"{a} {b}" for a in normal for b in other]
    truth = [True] * 9 + [False] * 9
    metrics = train_no_finding(texts, truth, str(tmp_path / "nf"), NoFindingSettings(epochs=200, threads=1), (texts, truth))
    assert metrics["validate_f1"] == 1.0
    model = NoFindingModel.load(str(tmp_path / "nf"), threads=1)
    assert model.normal(["The lungs are clear. The aorta is tortuous.", "No acute disease. Heart size is normal."]) == [False, True]


def test_the_expert_stage_learns_the_experts_conventions_over_the_teachers_labels(tmp_path):
    """The teacher calls "upper limits of normal" cardiomegaly and a report with a granuloma
    normal; the experts do neither. The stage learns both from the training reports' expert
    positives: it demotes the teacher's positive to uncertain (never to negative: the expert
    labels are positive-only), decides No Finding as the experts do, drops the scores of the labels
    it changed, and leaves an observation with too few expert positives as the labeler gave it."""
    from cxrlabel.labelers import Labeled
    from cxrlabel.labelers.expert_stage import ExpertStage, ExpertStageSettings, train_expert_stage

    hearts = {"The heart is enlarged.": 1, "Heart size is at the upper limits of normal.": 1, "The heart is normal in size.": 0}
    lungs = ("The lungs are clear.", "Calcified granuloma in the right upper lobe.")
    texts, teacher, expert = [], [], []
    for heart, lung in itertools.product(hearts, lungs):  # 6 reports, each 3 times
        enlarged, clear = heart == "The heart is enlarged.", lung == "The lungs are clear."
        positives = {"Cardiomegaly": enlarged, "No Finding": clear and not enlarged, "Edema": enlarged and clear}
        for _ in range(3):
            texts.append(f"{heart} {lung}")
            teacher.append(dict.fromkeys(OBSERVATIONS) | {"Cardiomegaly": hearts[heart], "Edema": 1 if enlarged else None, "No Finding": None if hearts[heart] else 1})
            expert.append([positives.get(name, False) for name in OBSERVATIONS])
    train_expert_stage(texts, teacher, np.array(expert), str(tmp_path / "stage"), ExpertStageSettings(min_positives=4, epochs=300, threads=1))
    stage = ExpertStage.load(str(tmp_path / "stage"), threads=1)
    assert stage.observations == ("No Finding", "Cardiomegaly")  # Edema: 3 expert positives < 4, left to the labeler
    scores = {"Cardiomegaly": {1: 2.0, 0: -1.0}, "Edema": {1: 1.0, 0: 0.0}}
    cases = (0, 6, 9, 15, 12)  # enlarged; upper limits with clear lungs, with a granuloma; normal heart with a granuloma; normal
    given = [Labeled(dict(teacher[i]), scores=scores) for i in cases]
    enlarged, upper_clear, upper_granuloma, granuloma, normal = stage.correct([texts[i] for i in cases], given)
    assert enlarged is given[0]  # the experts agree with the teacher: nothing changes
    assert (upper_clear.labels["Cardiomegaly"], upper_clear.labels["No Finding"], upper_clear.labels["Edema"]) == (-1, 1, None)
    assert upper_clear.scores == {"Edema": scores["Edema"]}
    assert (upper_granuloma.labels["Cardiomegaly"], upper_granuloma.labels["No Finding"]) == (-1, None)
    assert (granuloma.labels["Cardiomegaly"], granuloma.labels["No Finding"]) == (0, None)
    assert normal is given[4]


def test_the_expert_stage_refuses_expert_labels_too_sparse_to_stage_anything(tmp_path):
    from cxrlabel.labelers.expert_stage import ExpertStageSettings, train_expert_stage

    expert = np.zeros((4, len(OBSERVATIONS)), dtype=bool)
    expert[0, 2] = True
    with pytest.raises(ValueError, match="at least 80 expert positives among the 4 training reports"):
        train_expert_stage(["a.", "b.", "c.", "d."], [dict.fromkeys(OBSERVATIONS)] * 4, expert, str(tmp_path / "s"), ExpertStageSettings(threads=1))
    assert not (tmp_path / "s").exists()
