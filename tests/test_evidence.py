"""Evidence of the rule labeler: the span of the report text that decided each label.

Offsets index the text the labeler was given (not its lower-cased, whitespace-collapsed copy);
labels are the same with and without evidence.
"""

from __future__ import annotations

import random

import pytest

from cxrlabel.io.demo import DemoSpec, draw_labels, render_report
from cxrlabel.labelers import Evidence, Labeled, label_batch, supports_evidence
from cxrlabel.labelers.rule import RuleLabeler
from cxrlabel.observations import NO_FINDING, OBSERVATIONS
from cxrlabel.text import sentence_spans, split_sentences

LABELER = RuleLabeler()
P, N, U = 1, 0, -1


def demo_reports(n: int = 600, seed: int = 3) -> list[str]:
    """Whole MIMIC-style reports of the demo corpus generator (headers, ``___``, CRLF, long ones)."""
    rng, spec = random.Random(seed), DemoSpec()
    return [render_report(draw_labels(rng, spec), rng, rng.random() < spec.p_long) for _ in range(n)]


HAND_WRITTEN = [
    "No pneumothorax.",
    "possible pneumonia",
    "NO PNEUMOTHORAX. SMALL LEFT PLEURAL EFFUSION.",
    "No pleural effusion on the right.\r\nSmall left pleural effusion.\r\n",
    "  Possible\tleft   lower  lobe\u00a0consolidation.  \n\n  No   pleural\t\teffusion.",
    "Heart size is normal, the mediastinum is widened.",
    "Atelectasis versus pneumonia. Pneumonia cannot be excluded.",
    "No suspicious pulmonary opacity. 1. Endotracheal tube in place. 2. Heart size is top normal.",
    "Possible pneumonia. No pneumonia on the left. Pneumonia in the right lower lobe.",
    "İ Σ ΣΣ İİ pneumothorax - no edema",  # characters whose lower case is longer, or context-dependent
    "",
]


def check(text: str, labeled: Labeled) -> None:
    """Every non-blank label has evidence whose offsets give back its quote and cue from ``text``."""
    assert labeled.evidence is not None
    assert list(labeled.evidence) == [name for name in OBSERVATIONS if labeled.labels[name] is not None]
    for name, evidence in labeled.evidence.items():
        if name == NO_FINDING:
            assert evidence is None  # decided by the absence of findings, not by a span
            continue
        assert isinstance(evidence, Evidence) and 0 <= evidence.start < evidence.end <= len(text)
        assert text[evidence.start:evidence.end] == evidence.quote
        assert evidence.quote == evidence.quote.strip() and evidence.quote
        # the quote, read as the rules read it, is a mention (or attribute anchor) of that observation
        read = " ".join(evidence.quote.lower().split())
        patterns = [LABELER.mentions[name], *([LABELER.anchors[name]] if name in LABELER.anchors else [])]
        assert any(pattern.search(read) for pattern in patterns), (name, evidence)
        if evidence.cue is None:
            assert evidence.cue_start is None and evidence.cue_end is None
        else:
            assert text[evidence.cue_start:evidence.cue_end] == evidence.cue
        if labeled.labels[name] != P:  # negative and uncertain labels always name what made them so
            assert evidence.cue is not None, (name, evidence)


@pytest.mark.parametrize("text", HAND_WRITTEN)
def test_offsets_index_the_given_text(text):
    labeled = LABELER.label_with_evidence(text)
    assert labeled.labels == LABELER.label(text)
    check(text, labeled)


def test_negation_uncertainty_and_attributes():
    [negated] = LABELER.label_batch(["No pneumothorax."], evidence=True)
    assert negated.evidence == {"Pneumothorax": Evidence(3, 15, "pneumothorax", 0, 2, "No"), NO_FINDING: None}

    text = "Findings: possible PNEUMONIA."
    labeled = LABELER.label_with_evidence(text)
    assert labeled.labels["Pneumonia"] == U
    assert labeled.evidence["Pneumonia"] == Evidence(19, 28, "PNEUMONIA", 10, 18, "possible")

    text = "Pneumonia cannot be excluded."
    assert LABELER.label_with_evidence(text).evidence["Pneumonia"] == Evidence(0, 9, "Pneumonia", 10, 28, "cannot be excluded")

    # "no suspicious opacity": the negation decides, not the uncertainty word inside its scope
    text = "No suspicious pulmonary opacity."
    assert LABELER.label_with_evidence(text).evidence["Lung Opacity"] == Evidence(24, 31, "opacity", 0, 2, "No")

    # heart size and mediastinum: the anchor and its attribute; the attribute is the cue unless it asserts
    text = "Heart size is normal. The mediastinum is widened."
    evidence = LABELER.label_with_evidence(text).evidence
    assert evidence["Cardiomegaly"] == Evidence(0, 20, "Heart size is normal", 14, 20, "normal")
    assert evidence["Enlarged Cardiomediastinum"] == Evidence(26, 48, "mediastinum is widened")


def test_the_deciding_mention_is_the_first_of_the_final_class():
    text = "No pleural effusion on the right. Small left pleural effusion. Large right effusion."
    labeled = LABELER.label_with_evidence(text)
    assert labeled.labels["Pleural Effusion"] == P
    assert labeled.evidence["Pleural Effusion"] == Evidence(53, 61, "effusion")  # "Small left pleural effusion", not the negated one

    text = "No pneumonia on the left. Possible pneumonia. Pneumonia cannot be excluded."
    labeled = LABELER.label_with_evidence(text)
    assert labeled.labels["Pneumonia"] == U
    assert labeled.evidence["Pneumonia"] == Evidence(35, 44, "pneumonia", 26, 34, "Possible")

    text = "No edema. No pulmonary edema."
    assert LABELER.label_with_evidence(text).evidence["Edema"] == Evidence(3, 8, "edema", 0, 2, "No")


def test_crlf_odd_whitespace_and_upper_case():
    text = "FINDINGS:\r\n  NO   PLEURAL\tEFFUSION OR\r\nPNEUMOTHORAX.\r\n\r\nIMPRESSION:  possible\u00a0\u00a0left lower  lobe PNEUMONIA."
    labeled = LABELER.label_with_evidence(text)
    check(text, labeled)
    assert labeled.labels == LABELER.label(text) == LABELER.label(text.lower())
    assert labeled.evidence["Pleural Effusion"] == Evidence(26, 34, "EFFUSION", 13, 15, "NO")
    # a line break ends the sentence: "NO" does not reach PNEUMOTHORAX on the next line
    assert labeled.labels["Pneumothorax"] == P and labeled.evidence["Pneumothorax"] == Evidence(39, 51, "PNEUMOTHORAX")
    pneumonia = labeled.evidence["Pneumonia"]
    assert (pneumonia.quote, pneumonia.cue) == ("PNEUMONIA", "possible") and text[pneumonia.cue_start:pneumonia.cue_end] == "possible"
    # a phrase with collapsed whitespace inside is quoted as written
    text = "There is   pleural\t\tthickening."
    assert LABELER.label_with_evidence(text).evidence["Pleural Other"] == Evidence(11, 30, "pleural\t\tthickening")


def test_labels_are_identical_with_and_without_evidence_on_demo_reports():
    reports = demo_reports()
    plain = LABELER.label_batch(reports)
    with_evidence = LABELER.label_batch(reports, evidence=True)
    assert [item.labels for item in plain] == [item.labels for item in with_evidence]
    assert all(item.evidence is None for item in plain)
    for text, labeled in zip(reports, with_evidence):
        check(text, labeled)
    assert sum(1 for labeled in with_evidence for e in labeled.evidence.values() if e is not None and e.cue) > 100


def test_sentence_spans_match_the_splitter():
    for text in [*demo_reports(300, seed=5), *HAND_WRITTEN, "1. No effusion. 2. Edema - mild.\r\n\r\nOK!  Yes? x", ". . .", "a.b. c"]:
        assert [text[s:e] for s, e in sentence_spans(text)] == split_sentences(text)


def test_labelers_without_evidence_leave_it_none():
    class Plain:
        name = "plain"

        def label_batch(self, texts):
            return [Labeled(LABELER.label(text)) for text in texts]

    assert supports_evidence(LABELER) and not supports_evidence(Plain())
    assert label_batch(Plain(), ["No edema."], evidence=True)[0].evidence is None
    assert label_batch(LABELER, ["No edema."])[0].evidence is None
    assert label_batch(LABELER, ["No edema."], evidence=True)[0].evidence["Edema"].cue == "No"
    assert Labeled({}).evidence is None  # the field is optional: older callers construct Labeled unchanged
