"""A rule-based labeler in the spirit of the CheXpert labeler (own vocabulary and rules).

Per sentence: find mentions of each observation, then decide each mention's certainty from
cue phrases around it:
- negation (``no X or Y``, ``without X``, ``X is not seen``, ``X has resolved``) and
  uncertainty (``possible X``, ``X cannot be excluded``, ``may represent X``) have a
  direction: a cue before the mention reaches forward, a cue after it reaches backward;
  scopes end at the sentence end or at a clause break (``but``, ``however``, ``;``...);
- pseudo-cues that look like negation but are not (``no change in X``) are masked first;
- heart size and mediastinum are judged by their attribute (``heart size is normal`` is a
  negative Cardiomegaly mention, ``the mediastinum is widened`` a positive one).
Mentions of one observation are aggregated positive > uncertain > negative; No Finding
follows the CheXpert rule. Everything is compiled regular expressions: thousands of
reports per second on one core.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cxrlabel.labelers import Labeled, Labels
from cxrlabel.observations import AGGREGATION_ORDER, NO_FINDING, OBSERVATIONS, aggregate_mentions
from cxrlabel.text import split_sentences

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1


def _words(*phrases: str) -> str:
    """An alternation of phrases, each matched on word boundaries (``\\s+`` between words)."""
    return "|".join(r"\b" + r"\s+".join(p.split()) + r"\b" for p in sorted(phrases, key=len, reverse=True))


# Mention phrases (regex fragments allowed) per observation.
MENTIONS: dict[str, list[str]] = {
    "Enlarged Cardiomediastinum": [
        "widened mediastinum", "mediastinal widening", "mediastinal enlargement", "enlarged cardiomediastinum",
        "enlarged cardiomediastinal silhouette", "widened cardiomediastinal silhouette", "mediastinal mass",
        "enlarged mediastinum",
    ],
    "Cardiomegaly": ["cardiomegaly", "cardiac enlargement", "enlarged heart", "enlargement of the heart", "enlarged cardiac silhouette", "enlargement of the cardiac silhouette"],
    "Lung Lesion": [
        r"nodules?", r"masse?s?", "lump",
        "cavitary lesion", r"cavitary lesions", "carcinoma", "neoplasm", "tumor", "malignancy", r"lung lesions?",
        r"pulmonary lesions?", r"metastas[ie]s", "metastatic disease",
    ],
    "Lung Opacity": [
        r"opacit(?:y|ies)", "opacification", r"opacified", r"infiltrates?", "infiltration", r"infiltrative",
        r"air\s*space (?:disease|opacity|opacities|process|consolidation)", r"airspace", r"densit(?:y|ies)",
        r"interstitial (?:markings?|prominence|opacities|disease|thickening|pattern|changes)", r"scarring", r"scars?",
        r"reticular", r"haziness", r"hazy", r"fibrosis", r"fibrotic", "cicatrix", r"ground[- ]glass",
    ],
    "Edema": [
        r"edema", r"congestion", r"congestive heart failure", r"chf", r"heart failure", r"fluid overload",
        r"vascular prominence", r"prominen(?:t|ce)(?: of the)? (?:\w+ )?(?:pulmonary )?vascula(?:r|ture|rity)",
        r"(?:pulmonary )?venous hypertension", r"cephalization", r"kerley b lines?",
    ],
    "Consolidation": [r"consolidat(?:ion|ions|ed|ive)"],
    "Pneumonia": [r"pneumonias?", r"infection", r"infectious process", r"infectious", r"bronchopneumonia", r"pneumonitis"],
    "Atelectasis": [r"atelecta(?:sis|ses|tic)", r"collapse", r"collapsed"],
    "Pneumothorax": [r"pneumothora(?:x|ces)", r"hydropneumothorax", r"pleural air(?: collection)?"],
    "Pleural Effusion": [r"effusions?", r"pleural fluid", r"hydrothorax", r"hydrothoraces"],
    "Pleural Other": [
        r"pleural thickening", r"pleural (?:plaques?|calcifications?|scarring|scar)", r"fibrothorax",
        r"pleural[- ]based (?:thickening|density|opacity)", r"pleural reaction", r"apical (?:pleural )?caps?",
        r"pleural parenchymal scarring", r"pleuroparenchymal scarring", r"fissural thickening",
        r"thickening (?:of|in|along) the (?:\w+ )?fissures?", r"(?:bi)?apical (?:\w+ )?thickening",
    ],
    "Fracture": [r"fractures?", r"fractured", r"fx"],
    "Support Devices": [
        r"(?:endotracheal|tracheostomy|nasogastric|orogastric|feeding|chest|enteric|gastric|et|ng|og|dobhoff|trach) tubes?",
        r"\w+ tubes", r"tubes?", r"ett", r"catheters?", r"(?:central|venous|picc|arterial|ij|subclavian|jugular|swan[- ]ganz|pa|midline|port) lines?",
        r"picc", r"pacemakers?", r"pacer", r"aicd", r"icd", r"defibrillators?", r"(?:pacemaker|pacer|cardiac) leads?",
        r"(?:valve|valvular) (?:replacement|prosthesis)", r"prosthetic (?:valves?|aortic valve|mitral valve)", r"stents?",
        r"port-?a-?cath", r"(?:chest|venous|infusion|mediport|power) port", r"hardware", r"(?:medical |cardiac )?devices?",
        r"loop recorder", r"(?:lvad|ventricular assist device)", r"drains?", r"swan[- ]ganz", r"coils?", r"filter",
        # a tip is a catheter's or tube's, even where de-identification hid the device's name
        r"tips?", r"leads?", r"stimulator", r"generator", r"occluder", r"anchors?",
        r"(?:prosthetic|mechanical|bioprosthetic|artificial) (?:\w+ )?valves?", r"valve (?:replacement|prosthesis|repair)",
    ],
}
# Phrases that contain a mention but are not that observation: masked before matching.
EXCLUSIONS: dict[str, list[str]] = {
    "Pleural Effusion": [r"pericardial effusions?", r"joint effusions?", r"knee effusion"],
    "Edema": [r"soft[- ]tissue edema", r"subcutaneous edema"],
    "Lung Lesion": [r"soft[- ]tissue mass(?:es)?", r"muscle mass", r"breast masse?s?", r"mass effect", r"bone mass"],
    "Lung Opacity": [r"bone densit(?:y|ies)", r"soft[- ]tissue densit(?:y|ies)", r"breast densit(?:y|ies)", r"pleural[- ]based (?:density|opacity)", r"pleural parenchymal scarring", r"pleuroparenchymal scarring", r"pleural scarring"],
    "Support Devices": [r"bronchial tubes?", r"eustachian tubes?", r"tube current", r"filter(?:ed|ing)"],
    "Atelectasis": [r"vertebral (?:body )?collapse", r"compression collapse"],
    "Fracture": [r"fracture fixation hardware"],
}
# Anchors judged by their attribute: (observation, anchor phrases).
ATTRIBUTE_ANCHORS: dict[str, list[str]] = {
    "Cardiomegaly": [r"heart(?: size)?", r"cardiac (?:silhouette|size|contours?|shadow)", r"heart (?:contours?|shadow)"],
    "Enlarged Cardiomediastinum": [
        r"cardiomediastinal (?:silhouette|contours?|size|shadow)", r"cardio ?mediastinal (?:silhouette|contours?)",
        r"mediastin(?:um|al) (?:silhouette|contours?|width|size)?", r"mediastinum", r"hilar and mediastinal contours",
    ],
}
ABNORMAL_ATTRIBUTES = _words("enlarged", "enlargement", "widened", "widening", "prominent", "prominence", "large", "increased", "mildly enlarged", "moderately enlarged", "severely enlarged")
BORDERLINE_ATTRIBUTES = _words("borderline", "top normal", "top-normal", "upper limits of normal", "upper limit of normal", "at the upper limits", "possibly enlarged", "likely enlarged")
NORMAL_ATTRIBUTES = _words("normal", "within normal limits", "unremarkable", "not enlarged", "not widened", "normal in size", "normal size", "stable and normal", "no cardiomegaly", "upper normal")

PSEUDO_NEGATIONS = _words(
    "no change", "no interval change", "no significant change", "no significant interval change", "not changed",
    "no substantial change", "no appreciable change", "not significantly changed", "no new change", "not only",
    "no increase", "no decrease", "without change", "without interval change", "no further", "not been changed",
    "no longer been",
)
PRE_NEGATIONS = _words(
    "no", "not", "without", "negative for", "free of", "absence of", "absent", "resolution of", "resolved",
    "clear of", "rather than", "never", "no evidence of", "no definite", "no signs of", "no sign of",
    "there is no", "there are no", "removal of", "removed", "interval removal of", "no longer", "nor", "neither",

)
POST_NEGATIONS = _words(
    "not seen", "not identified", "not present", "not appreciated", "not visualized", "not evident",
    "not demonstrated", "not detected", "not noted", "not visible", "not clearly seen", "resolved", "has resolved",
    "have resolved", "has cleared", "have cleared", "is absent", "are absent", "no longer seen", "no longer present",
    "no longer visualized", "not apparent", "been removed", "was removed", "were removed", "has been removed",
    "not definitely seen", "not definitely identified", "is gone", "are gone", "not convincingly seen",
)
PRE_UNCERTAIN = _words(
    "possible", "possibly", "probable", "probably", "likely", "may", "might", "could", "questionable",
    "question of", "questioned", "suspicious", "suspected", "suspect", "suspicion", "concern for",
    "concerning for", "concerning", "suggest", "suggests", "suggestive", "suggesting", "differential",
    "equivocal", "indeterminate", "cannot exclude", "can not exclude", "cannot rule out",
    "can not rule out", "can't exclude", "rule out", "r/o", "evaluate for", "uncertain", "presumed",
    "presumably", "perhaps", "potential", "potentially", "borderline", "not excluded",
    "not entirely excluded", "would be difficult to exclude", "difficult to exclude", "cannot be excluded",
    "not be excluded", "consider", "considered", "favored", "favor",
)
POST_UNCERTAIN = _words(
    "cannot be excluded", "can not be excluded", "not excluded", "cannot be ruled out", "can not be ruled out",
    "not ruled out", "is possible", "are possible", "is questioned", "are questioned", "is suspected",
    "are suspected", "is not excluded", "not entirely excluded", "is suggested", "are suggested",
    "may be present", "not be excluded", "difficult to exclude",
)
# "X versus Y": both sides are uncertain.
BOTH_UNCERTAIN = _words("versus", "vs")
# A negation or uncertainty scope ends at a clause break.
CLAUSE_BREAKS = re.compile(r";|:|\b(?:but|however|although|though|which|whereas|while|except|aside from|apart from|otherwise|there is|there are|with the exception)\b")


def _compile(phrases: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(r"\b(?:" + p + r")\b" for p in phrases))


@dataclass(frozen=True)
class _Cue:
    start: int
    end: int
    kind: str  # {pre, post, both}_{neg, unc}: which way the cue reaches, and what it means


class RuleLabeler:
    """Labels report texts with the rules above; stateless after construction and deterministic."""

    name = "rule"

    def __init__(self) -> None:
        self.mentions = {name: _compile(phrases) for name, phrases in MENTIONS.items()}
        self.exclusions = {name: _compile(phrases) for name, phrases in EXCLUSIONS.items()}
        self.anchors = {name: _compile(phrases) for name, phrases in ATTRIBUTE_ANCHORS.items()}
        self.pseudo = re.compile(PSEUDO_NEGATIONS)
        # Uncertainty phrases are found before negation ones so that "cannot be excluded" is
        # not read as a negation; longer phrases win within each kind.
        self.cue_patterns = [
            ("both_unc", re.compile(BOTH_UNCERTAIN)),
            ("post_unc", re.compile(POST_UNCERTAIN)),
            ("pre_unc", re.compile(PRE_UNCERTAIN)),
            ("post_neg", re.compile(POST_NEGATIONS)),
            ("pre_neg", re.compile(PRE_NEGATIONS)),
        ]
        self.abnormal, self.borderline, self.normal = (re.compile(p) for p in (ABNORMAL_ATTRIBUTES, BORDERLINE_ATTRIBUTES, NORMAL_ATTRIBUTES))

    def label(self, text: str) -> Labels:
        """The 14 labels of one report (1, 0, -1 or None for blank)."""
        return aggregate_mentions(self.sentence_labels(sentence) for sentence in split_sentences(text))

    def sentence_labels(self, sentence: str) -> Labels:
        """The labels of one sentence's mentions, aggregated; No Finding (a report-level label) is blank."""
        found: dict[str, set[int]] = {}
        # one space between words: mention phrases are written with single spaces, and a tab or
        # a doubled space (a form change, see cxrlabel.perturb) must not hide a mention
        for name, certainty in self._sentence_mentions(" ".join(sentence.lower().split())):
            found.setdefault(name, set()).add(certainty)
        return {NO_FINDING: None} | {name: _aggregate(found[name]) if name in found else None for name in OBSERVATIONS[1:]}

    def label_batch(self, texts: Sequence[str]) -> list[Labeled]:
        return [Labeled(self.label(text)) for text in texts]

    def _sentence_mentions(self, sentence: str) -> Iterable[tuple[str, int]]:
        sentence = self.pseudo.sub(lambda m: " " * len(m.group()), sentence)
        cues = self._cues(sentence)
        breaks = [m.start() for m in CLAUSE_BREAKS.finditer(sentence)]
        commas = [i for i, char in enumerate(sentence) if char == ","]
        for name, pattern in self.mentions.items():
            masked = sentence
            if name in self.exclusions:
                masked = self.exclusions[name].sub(lambda m: " " * len(m.group()), sentence)
            for match in pattern.finditer(masked):
                if not _inside_cue(match, cues):
                    yield name, _certainty(match.start(), match.end(), cues, breaks, commas)
        for name, pattern in self.anchors.items():
            for match in pattern.finditer(sentence):
                attribute = self._attribute(sentence, match, breaks)
                if attribute is not None:
                    certainty = _certainty(match.start(), match.end(), cues, breaks, commas)
                    yield name, attribute if certainty == POSITIVE else certainty

    def _cues(self, sentence: str) -> list[_Cue]:
        cues: list[_Cue] = []
        taken = [False] * (len(sentence) + 1)
        for kind, pattern in self.cue_patterns:
            for m in pattern.finditer(sentence):
                if not any(taken[m.start():m.end()]):
                    cues.append(_Cue(m.start(), m.end(), kind))
                    taken[m.start():m.end()] = [True] * (m.end() - m.start())
        return cues

    def _attribute(self, sentence: str, anchor: re.Match[str], breaks: list[int]) -> int | None:
        """The certainty an attribute gives a heart-size or mediastinum anchor, None when it has none.

        The attribute may follow the anchor in its clause ("heart size is normal") or stand
        just before it ("normal heart size", "enlarged cardiac silhouette").
        """
        end = min([b for b in breaks if b >= anchor.end()] + [len(sentence)])
        after = sentence[anchor.end():end]
        before = sentence[max(0, anchor.start() - 25):anchor.start()]
        for window in (after, before):
            if self.borderline.search(window):
                return UNCERTAIN
            normal, abnormal = self.normal.search(window), self.abnormal.search(window)
            if normal and (not abnormal or normal.start() <= abnormal.start() or "not" in window[:abnormal.start()].split()[-2:]):
                return NEGATIVE
            if abnormal:
                return POSITIVE
        return None


def _inside_cue(match: re.Match[str], cues: list[_Cue]) -> bool:
    return any(cue.start <= match.start() and match.end() <= cue.end for cue in cues)


def _certainty(start: int, end: int, cues: list[_Cue], breaks: list[int], commas: list[int]) -> int:
    """Uncertain if an uncertainty cue reaches the mention, else negative if a negation does, else positive."""
    reaching = [cue for cue in cues if _reaches(cue, start, end, breaks, commas)]
    negations = [cue.start for cue in reaching if cue.kind == "pre_neg"]
    uncertain = [cue.start for cue in reaching if cue.kind.endswith("unc")]
    # "no suspicious opacity": an uncertainty word inside a negation's scope is negated too
    if uncertain and not (negations and min(negations) < min(uncertain)):
        return UNCERTAIN
    if negations or any(cue.kind.endswith("neg") for cue in reaching):
        return NEGATIVE
    return POSITIVE


def _reaches(cue: _Cue, start: int, end: int, breaks: list[int], commas: list[int]) -> bool:
    """Whether ``cue`` reaches the mention at ``start:end``: in its direction, with no clause break between.

    A two-way cue ("X versus Y") reaches back only within its comma-delimited phrase, so that
    "opacity, possibly atelectasis versus pneumonia" leaves the opacity asserted.
    """
    forward, backward = cue.kind.startswith(("pre", "both")), cue.kind.startswith(("post", "both"))
    if forward and cue.end <= start:
        return not any(cue.end <= b < start for b in breaks)
    if backward and cue.start >= end:
        stops = breaks + commas if cue.kind.startswith("both") else breaks
        return not any(end <= b < cue.start for b in stops)
    return False


def _aggregate(certainties: set[int]) -> int:
    """Across the mentions of one observation: positive beats uncertain beats negative."""
    return next(certainty for certainty in AGGREGATION_ORDER if certainty in certainties)
