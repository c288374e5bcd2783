"""The preference builder: the reward, ranking, ties, duplicates, positive-only gold, human rows."""

from __future__ import annotations

import polars as pl
import pytest

from cxrlabel.instruct import PromptSettings
from cxrlabel.io.records import BadInputError, DropLog
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.training.preferences import counted_observations, label_reward, rank_pairs, read_human_judgements

BLANK = {name: None for name in OBSERVATIONS}
EXPERT = BLANK | {"Edema": 1, "Pneumothorax": 0}
GOOD = '{"Edema": "positive", "Pneumothorax": "negative"}'
HALF = '{"Edema": "positive"}'
WRONG = '{"Edema": "negative", "Fracture": "positive"}'
BROKEN = '{"Edema": "posi'


def test_the_reward_against_full_expert_labels_counts_matching_observations_and_half_a_certainty_step_off():
    assert label_reward(GOOD, EXPERT, "full", "mentioned") == 14
    assert label_reward(HALF, EXPERT, "full", "mentioned") == 13
    assert label_reward(WRONG, EXPERT, "full", "mentioned") == 11
    assert label_reward(BROKEN, EXPERT, "full", "mentioned") < label_reward(WRONG, EXPERT, "full", "mentioned") - 10
    # an uncertain edema where the expert says positive, or an uncertain pneumothorax where negative: half credit
    assert label_reward('{"Edema": "uncertain", "Pneumothorax": "negative"}', EXPERT, "full", "mentioned") == 13.5
    assert label_reward('{"Edema": "positive", "Pneumothorax": "uncertain"}', EXPERT, "full", "mentioned") == 13.5


def test_the_reward_against_positive_only_labels_ignores_what_indexers_cannot_say():
    indexer = BLANK | {"Edema": 1, "Fracture": 1}
    # a negative Pneumothorax is neither right nor wrong against positive-only labels
    assert label_reward(GOOD, indexer, "positive_only", "mentioned") == label_reward(HALF, indexer, "positive_only", "mentioned") == 1
    assert label_reward('{"Edema": "positive", "Fracture": "positive"}', indexer, "positive_only", "mentioned") == 2
    assert label_reward('{"Cardiomegaly": "positive"}', indexer, "positive_only", "mentioned") == -1
    # hedging earns and costs half: an uncertain edema (indexed) and an uncertain cardiomegaly (not)
    assert label_reward('{"Edema": "uncertain"}', indexer, "positive_only", "mentioned") == 0.5
    assert label_reward('{"Cardiomegaly": "uncertain", "Fracture": "positive"}', indexer, "positive_only", "mentioned") == 0.5


def test_a_policy_whose_no_finding_a_report_stage_decides_is_not_paid_for_inventing_findings():
    """Against an indexer who did not call the report normal, a sentence answer that invents an
    uncertain finding clears the CheXpert rule's No Finding: it gains with No Finding counted, and
    loses once a report-level model decides No Finding (counted_observations(True))."""
    indexer = BLANK | {"Fracture": 1}  # indexed with a finding, not as normal
    context = [{"Fracture": None}]  # the report's other sentence: no finding of the 14
    plain, invented = "{}", '{"Atelectasis": "uncertain"}'
    everything = [label_reward(o, indexer, "positive_only", "mentioned", context) for o in (plain, invented)]
    decided = [label_reward(o, indexer, "positive_only", "mentioned", context, counted_observations(True)) for o in (plain, invented)]
    assert everything[1] > everything[0] and decided[1] < decided[0]
    assert counted_observations(False) == OBSERVATIONS and "No Finding" not in counted_observations(True)


def test_pairs_rank_the_better_output_first_and_skip_ties_and_duplicates():
    pairs = rank_pairs("s1", "prompt", [GOOD, HALF, f" {GOOD} ", HALF, WRONG], EXPERT, "full", "mentioned", max_pairs=10)
    assert [(p["chosen"], p["rejected"], p["margin"]) for p in pairs] == [(GOOD, WRONG, 3.0), (HALF, WRONG, 2.0), (GOOD, HALF, 1.0)]
    assert all(p["source"] == "simulated" and p["annotator"] is None for p in pairs)
    assert rank_pairs("s1", "prompt", [GOOD, GOOD, GOOD], EXPERT, "full", "mentioned", 10) == []
    tied = '{"Edema": "positive", "Pneumothorax": "negative", "Hernia": "positive"}'  # malformed, like BROKEN
    assert rank_pairs("s1", "prompt", [BROKEN, tied], EXPERT, "full", "mentioned", 10) == []
    assert len(rank_pairs("s1", "prompt", [GOOD, HALF, WRONG], EXPERT, "full", "mentioned", max_pairs=1)) == 1
    # a malformed candidate's pairs come last, whatever their margin: the label pairs are kept first
    kept = rank_pairs("s1", "prompt", [GOOD, HALF, BROKEN], EXPERT, "full", "mentioned", max_pairs=2)
    assert [(p["chosen"], p["rejected"], p["rejected_malformed"]) for p in kept] == [(GOOD, HALF, False), (GOOD, BROKEN, True)]


REPORTS = pl.DataFrame({"study_id": ["1", "2"], "text": ["Mild edema.", "No pneumothorax."]})


def test_human_judgements_with_invalid_rows_reported(tmp_path):
    path = tmp_path / "judgements.csv"
    pl.DataFrame(
        [
            ("1", HALF, GOOD, "b", "rad1"),
            ("9", "x", "y", "a", "rad1"),  # unknown study
            ("2", "x", "y", "maybe", "rad2"),  # invalid choice
            ("2", "x", "x", "a", "rad2"),  # not a pair
            ("2", "x", "y", "A", "rad2"),
        ],
        schema=["study_id", "output_a", "output_b", "preferred", "annotator"],
        orient="row",
    ).write_csv(path)
    drops = DropLog()
    pairs = read_human_judgements(str(path), REPORTS, PromptSettings("mentioned"), drops)
    assert pairs.select("study_id", "chosen", "rejected", "source", "annotator").rows() == [
        ("1", GOOD, HALF, "human", "rad1"),
        ("2", "x", "y", "human", "rad2"),
    ]
    assert pairs["prompt"][0].endswith("Report: Mild edema.\n\nLabels:\n")
    assert [(r["record"], r["reason"]) for r in drops.rows] == [("line 3", "unknown_study"), ("line 4", "invalid_choice"), ("line 5", "not_a_pair")]


def test_human_judgements_jsonl_and_header_errors(tmp_path):
    path = tmp_path / "judgements.jsonl"
    path.write_text('{"study_id": "2", "output_a": "a", "output_b": "b", "preferred": "a", "annotator": "r"}\n{"study_id": "1"\n')
    with pytest.raises(BadInputError, match=r"judgements\.jsonl: line 2: not JSON"):
        read_human_judgements(str(path), REPORTS, PromptSettings("mentioned"), DropLog())
    bad = tmp_path / "bad.csv"
    bad.write_text("study_id,a,b\n1,x,y\n")
    with pytest.raises(BadInputError, match=r"missing column\(s\) \['output_a'"):
        read_human_judgements(str(bad), REPORTS, PromptSettings("mentioned"), DropLog())


def test_a_sentence_output_is_judged_by_the_report_labels_it_leads_to():
    others = [BLANK | {"Edema": 1}]  # another sentence of the report already says edema
    # the sentence says nothing, or the pneumothorax is absent: the report agrees the same or better
    assert label_reward("{}", EXPERT, "full", "mentioned", others) == 13
    assert label_reward('{"Pneumothorax": "negative"}', EXPERT, "full", "mentioned", others) == 14
    # calling its edema negative does not undo the other sentence's positive (positive wins)
    assert label_reward('{"Edema": "negative", "Pneumothorax": "negative"}', EXPERT, "full", "mentioned", others) == 14
    pairs = rank_pairs("s1", "prompt", ["{}", '{"Pneumothorax": "negative"}'], EXPERT, "full", "mentioned", 10, others)
    assert [(p["chosen"], p["rejected"], p["margin"]) for p in pairs] == [('{"Pneumothorax": "negative"}', "{}", 1.0)]
