"""The rule labeler on hand-written sentences, one per construction it must handle."""

from __future__ import annotations

import polars as pl
import pytest

from cxrlabel.labelers.rule import RuleLabeler
from cxrlabel.observations import OBSERVATIONS

LABELER = RuleLabeler()
P, N, U = 1, 0, -1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # plain mentions
        ("There is a small left pleural effusion.", {"Pleural Effusion": P}),
        ("Endotracheal tube terminates 4 cm above the carina.", {"Support Devices": P, "No Finding": P}),
        ("Right PICC line tip in the SVC.", {"Support Devices": P, "No Finding": P}),
        ("Healing right rib fracture.", {"Fracture": P}),
        ("Patchy bibasilar airspace disease.", {"Lung Opacity": P}),
        ("Increased interstitial markings and scarring.", {"Lung Opacity": P}),
        ("Mild pulmonary vascular congestion.", {"Edema": P}),
        # negation before the mention, with lists
        ("No pneumothorax.", {"Pneumothorax": N, "No Finding": P}),
        ("No pleural effusion or pneumothorax.", {"Pleural Effusion": N, "Pneumothorax": N, "No Finding": P}),
        ("No focal consolidation, pneumothorax, or pleural effusion.", {"Consolidation": N, "Pneumothorax": N, "Pleural Effusion": N, "No Finding": P}),
        ("Lungs are clear without consolidation.", {"Consolidation": N, "No Finding": P}),
        ("Negative for acute fracture.", {"Fracture": N, "No Finding": P}),
        ("There is no evidence of pulmonary edema.", {"Edema": N, "No Finding": P}),
        ("No suspicious pulmonary opacity.", {"Lung Opacity": N, "No Finding": P}),
        # negation after the mention
        ("Pneumothorax is not seen.", {"Pneumothorax": N, "No Finding": P}),
        ("A focal consolidation is not identified.", {"Consolidation": N, "No Finding": P}),
        ("The left effusion has resolved.", {"Pleural Effusion": N, "No Finding": P}),
        ("Previously seen edema has resolved.", {"Edema": N, "No Finding": P}),
        ("The endotracheal tube has been removed.", {"Support Devices": N, "No Finding": P}),
        # scope ends at a clause break or the sentence
        ("Small left effusion but no pneumothorax.", {"Pleural Effusion": P, "Pneumothorax": N}),
        ("No pneumothorax. Small left effusion.", {"Pleural Effusion": P, "Pneumothorax": N}),
        ("No edema; there is a right lower lobe consolidation.", {"Edema": N, "Consolidation": P}),
        # a negation's scope ends where a new finding begins (NegEx/ConText): a comma or "and"
        # before a size, severity, change or side word, a terminating "with", a closed list
        ("No pneumothorax, large left pleural effusion.", {"Pneumothorax": N, "Pleural Effusion": P}),
        ("No pneumothorax, small bilateral effusions.", {"Pneumothorax": N, "Pleural Effusion": P}),
        ("No pneumothorax with moderate cardiomegaly.", {"Pneumothorax": N, "Cardiomegaly": P}),
        ("No pneumothorax and moderate cardiomegaly.", {"Pneumothorax": N, "Cardiomegaly": P}),
        ("No evidence of pneumothorax with a right chest tube in place.", {"Pneumothorax": N, "Support Devices": P, "No Finding": P}),
        ("No edema or effusion, mild cardiomegaly.", {"Edema": N, "Pleural Effusion": N, "Cardiomegaly": P}),
        ("No acute fracture, old healed rib fractures.", {"Fracture": P}),
        ("No pneumothorax, and a small left effusion.", {"Pneumothorax": N, "Pleural Effusion": P}),
        ("No effusion, possible pneumonia.", {"Pleural Effusion": N, "Pneumonia": U}),
        # ...and goes on through the items of its list, whatever their modifiers
        ("No focal consolidation, large effusion, or pneumothorax.", {"Consolidation": N, "Pleural Effusion": N, "Pneumothorax": N, "No Finding": P}),
        ("No focal consolidation, suspicious pulmonary opacity, pneumothorax or definite pleural effusion.",
         {"Consolidation": N, "Lung Opacity": N, "Pneumothorax": N, "Pleural Effusion": N, "No Finding": P}),
        ("No evidence of pulmonary consolidation, large pleural effusion/pneumothorax.", {"Consolidation": N, "Pleural Effusion": N, "Pneumothorax": N, "No Finding": P}),
        ("No effusion, edema, and pneumothorax.", {"Pleural Effusion": N, "Edema": N, "Pneumothorax": N, "No Finding": P}),
        # a negation after its findings reaches back across a comma only into its own list
        ("Right chest tube in place, pneumothorax not seen.", {"Support Devices": P, "Pneumothorax": N, "No Finding": P}),
        ("Left midlung opacity noted, not visualized on prior.", {"Lung Opacity": P}),
        ("Pleural effusion, consolidation, or pneumothorax is not seen.", {"Pleural Effusion": N, "Consolidation": N, "Pneumothorax": N, "No Finding": P}),
        # and at most SCOPE_WORDS words from its cue
        ("No focal consolidation, pneumothorax, or large pleural effusion identified (blunting of costophrenic recesses bilaterally may represent small effusions or pleural thickening/scar.",
         {"Consolidation": N, "Pneumothorax": N, "Pleural Effusion": U, "Lung Opacity": U, "Pleural Other": U}),
        # uncertainty, before and after
        ("Pneumonia cannot be excluded.", {"Pneumonia": U}),
        ("Cannot exclude a small pneumothorax.", {"Pneumothorax": U}),
        ("Findings may represent early pneumonia.", {"Pneumonia": U}),
        ("Possible left lower lobe consolidation.", {"Consolidation": U}),
        ("Opacity may represent atelectasis.", {"Lung Opacity": P, "Atelectasis": U}),
        ("Atelectasis versus pneumonia.", {"Atelectasis": U, "Pneumonia": U}),
        ("Left basilar opacity, possibly atelectasis versus pneumonia.", {"Lung Opacity": P, "Atelectasis": U, "Pneumonia": U}),
        ("Questionable small right pleural effusion.", {"Pleural Effusion": U}),
        # exclusions: a pericardial effusion is not a pleural effusion
        ("There is a small pericardial effusion.", {"No Finding": P}),
        ("Subcutaneous edema of the chest wall.", {"No Finding": P}),
        # pseudo-negation: "no change" does not negate
        ("No change in the small left pleural effusion.", {"Pleural Effusion": P}),
        # heart size and mediastinum phrasing
        ("Heart size is normal.", {"Cardiomegaly": N, "No Finding": P}),
        ("The heart is not enlarged.", {"Cardiomegaly": N, "No Finding": P}),
        ("Normal heart size.", {"Cardiomegaly": N, "No Finding": P}),
        ("The heart is mildly enlarged.", {"Cardiomegaly": P}),
        ("Heart size is top normal.", {"Cardiomegaly": U}),
        ("The cardiomediastinal silhouette is within normal limits.", {"Enlarged Cardiomediastinum": N, "No Finding": P}),
        ("The mediastinum is widened.", {"Enlarged Cardiomediastinum": P}),
        ("Heart size and mediastinal contour are within normal limits.", {"Cardiomegaly": N, "Enlarged Cardiomediastinum": N, "No Finding": P}),
        ("Heart size is normal, the mediastinum is widened.", {"Cardiomegaly": N, "Enlarged Cardiomediastinum": P}),
        # aggregation: positive beats uncertain beats negative
        ("No pleural effusion on the right. Small left pleural effusion.", {"Pleural Effusion": P}),
        ("Possible pneumonia. No pneumonia on the left.", {"Pneumonia": U}),
        # No Finding: a support device alone leaves it positive; an uncertain finding clears it
        ("", {"No Finding": P}),
        ("Possible atelectasis.", {"Atelectasis": U}),
    ],
)
def test_sentence(text, expected):
    assert {name: value for name, value in LABELER.label(text).items() if value is not None} == expected


def test_deterministic_and_case_insensitive():
    text = "NO PNEUMOTHORAX. Small Left Effusion."
    assert LABELER.label(text) == LABELER.label(text.lower()) == RuleLabeler().label(text)


def test_report_labels_are_the_sentence_labels_aggregated_like_chexpert(openi_csv):
    """positive > uncertain > negative per observation over the sentences, then No Finding."""
    from cxrlabel.observations import aggregate_mentions
    from cxrlabel.text import split_sentences

    labeler = RuleLabeler()
    texts = pl.read_csv(openi_csv, infer_schema=False).select(pl.concat_str("findings", "impression", separator=" ", ignore_nulls=True))["findings"]
    for text in texts.head(400):
        by_sentence = [labeler.sentence_labels(s) for s in split_sentences(text)]
        assert all(labels["No Finding"] is None for labels in by_sentence)
        assert labeler.label(text) == aggregate_mentions(by_sentence)
    assert aggregate_mentions([{"Edema": 0}, {"Edema": -1}, {"Edema": 0, "Pneumothorax": 0}]) == {name: None for name in OBSERVATIONS} | {"Edema": -1, "Pneumothorax": 0}
    assert aggregate_mentions([{"Edema": 0}, {"Edema": 1}, {"Edema": -1}])["Edema"] == 1
    assert aggregate_mentions([{"Support Devices": 1}])["No Finding"] == 1 and aggregate_mentions([])["No Finding"] == 1


# One sentence with every construction whose cost could grow with the sentence: attributes looked
# for up to the clause end, uncertainty scopes that reach to it, two-way cues, negations either way.
LONG_CLAUSE = "the heart size is normal, possible left effusion, atelectasis versus pneumonia, pneumothorax not seen and no edema or consolidation "


def long_sentence(n_chars: int) -> str:
    """An export without periods: one sentence of ``n_chars`` characters."""
    return (LONG_CLAUSE * (n_chars // len(LONG_CLAUSE) + 1))[:n_chars]


def test_labeling_time_is_linear_in_sentence_length():
    """16 times the sentence takes about 16 times as long (a quadratic labeler: 100-250 times)."""
    import time

    texts = {"small": long_sentence(4_000), "large": long_sentence(64_000)}
    best = dict.fromkeys(texts, float("inf"))
    for _ in range(3):
        for size, text in texts.items():  # interleaved, and CPU time: a loaded machine slows both alike
            start = time.process_time()
            LABELER.label_batch([text], evidence=True)
            best[size] = min(best[size], time.process_time() - start)
    assert best["large"] < 5, f"64,000 characters took {best['large']:.2f} s"
    assert best["large"] < 4 * 16 * best["small"], f"{best['large'] / best['small']:.0f} times as long for 16 times the sentence"


def test_the_cue_index_of_long_sentences_decides_as_testing_every_cue(openi_csv, monkeypatch):
    """Sentences with many cues look up those that reach a mention; with every sentence indexed,
    labels and evidence are those of testing every cue against every mention."""
    from cxrlabel.labelers import rule

    texts = pl.read_csv(openi_csv, infer_schema=False).select(pl.concat_str("findings", "impression", separator=" ", ignore_nulls=True))["findings"]
    texts = [*texts.head(300), long_sentence(3_000), *(text.replace(".", "") for text in texts.head(100))]

    def labeled(few: int) -> list[tuple]:
        monkeypatch.setattr(rule._Scopes, "few", few)
        return [(item.labels, {name: e and e.to_json() for name, e in item.evidence.items()}) for item in RuleLabeler().label_batch(texts, evidence=True)]

    assert labeled(0) == labeled(10**9)
