"""The 14 CheXpert observations, their value codes and the No Finding convention.

Labels are 1 positive, 0 negative, -1 uncertain and blank ("not mentioned": ``None`` in Python,
null in tables, whose label columns are Int8; see :mod:`cxrlabel.io.labels`). Blank is never 0:
"not mentioned" and "negative" are different answers. No table library is imported here, so that
the rule labeler and ``cxrlabel label --labeler rule`` start fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

#: Canonical column order of the CheXpert / CheXbert tools.
OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
#: The 12 pathologies whose positive or uncertain mention rules out No Finding.
PATHOLOGIES: tuple[str, ...] = tuple(
    name for name in OBSERVATIONS if name not in (NO_FINDING, SUPPORT_DEVICES)
)

#: Spellings used by other releases of the same label files.
ALIASES: dict[str, str] = {"Airspace Opacity": "Lung Opacity"}


class Certainty(IntEnum):
    """A non-blank label; blank is ``None`` wherever labels are held in Python."""

    POSITIVE = 1
    NEGATIVE = 0
    UNCERTAIN = -1

    @property
    def word(self) -> str:
        return self.name.lower()


#: What each code is written as in a CheXpert-format CSV (blank: an empty cell).
CSV_SPELLING: dict[int, str] = {1: "1.0", 0: "0.0", -1: "-1.0"}

#: Which certainty wins when an observation is mentioned several times in a report.
AGGREGATION_ORDER: tuple[int, ...] = (Certainty.POSITIVE, Certainty.UNCERTAIN, Certainty.NEGATIVE)


def aggregate_mentions(labelings: Iterable[dict[str, int | None]]) -> dict[str, int | None]:
    """The report's labels from the labels of its parts (mentions or sentences), as the CheXpert
    labeler aggregates mentions: per observation positive beats uncertain beats negative, blank
    where no part mentions it; then No Finding by :func:`apply_no_finding_rule` (the parts'
    own No Finding is ignored: it is a report-level label)."""
    found: dict[str, set[int]] = {}
    for labels in labelings:
        for name in OBSERVATIONS[1:]:
            if labels.get(name) is not None:
                found.setdefault(name, set()).add(labels[name])
    aggregated = {name: next((c for c in AGGREGATION_ORDER if c in found.get(name, ())), None) for name in OBSERVATIONS[1:]}
    return apply_no_finding_rule(aggregated)


def apply_no_finding_rule(labels: dict[str, int | None]) -> dict[str, int | None]:
    """Return ``labels`` with No Finding set by the CheXpert convention.

    No Finding is positive exactly when none of the 12 pathologies is positive or
    uncertain (Support Devices does not count); otherwise it is blank. It is never
    negative or uncertain.
    """
    finding = any(labels.get(name) in (1, -1) for name in PATHOLOGIES)
    return {**labels, NO_FINDING: None if finding else 1}

