"""A rule-based labeler in the spirit of the CheXpert labeler (own vocabulary and rules).

Per sentence: find mentions of each observation, then decide each mention's certainty from
cue phrases around it:
- negation (``no X or Y``, ``without X``, ``X is not seen``, ``X has resolved``) and
  uncertainty (``possible X``, ``X cannot be excluded``, ``may represent X``) have a
  direction: a cue before the mention reaches forward, a cue after it reaches backward;
  scopes end at the sentence end or at a clause break (``but``, ``however``, ``;``...), and a
  negation's also where NegEx and ConText end theirs: at a terminating ``with``, at a comma or
  ``and`` that starts a new finding rather than the next item of its list (``no pneumothorax,
  large left effusion``), and after ``SCOPE_WORDS`` words;
- pseudo-cues that look like negation but are not (``no change in X``) are masked first;
- heart size and mediastinum are judged by their attribute (``heart size is normal`` is a
  negative Cardiomegaly mention, ``the mediastinum is widened`` a positive one).
Mentions of one observation are aggregated positive > uncertain > negative; No Finding
follows the CheXpert rule. Everything is compiled regular expressions: thousands of
reports per second on one core, and time linear in a sentence's length (give or take a log):
clause breaks, commas, words and cues are found once per sentence and then looked up by bisection,
so that an export without periods, one long sentence, labels as fast per character as a report.

Evidence (``label_batch(texts, evidence=True)`` or :meth:`RuleLabeler.label_with_evidence`):
each non-blank label comes with the mention that decided it, the first mention in text order
whose class is the report's class for that observation, as offsets into the text given (the
rules read a lower-cased, whitespace-collapsed copy of each sentence; offsets are mapped back),
with the cue that gave it its class. No Finding has no mention (it is positive when no pathology
is found): its evidence is None. The labels are the same with and without evidence (one code
path decides both); evidence is opt-in because mapping offsets back costs time.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate
from typing import NamedTuple

from cxrlabel.labelers import Evidence, Labeled, Labels
from cxrlabel.observations import AGGREGATION_ORDER, NO_FINDING, OBSERVATIONS, aggregate_mentions
from cxrlabel.text import sentence_spans, split_sentences

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
# ConText's terminating terms of a forward scope: "No pneumothorax with a chest tube in place."
TERMINATORS = re.compile(r"\bwith\b|\bw/")
# Words that open a new finding after a comma or "and" ("No pneumothorax, large left effusion."):
# size, severity, change, side, a determiner or a number; a forward scope ends before them.
NEW_FINDING = re.compile(
    r"(?:and )?(?:" + _words(
        "small", "large", "moderate", "mild", "mildly", "minimal", "minor", "trace", "tiny", "massive", "severe",
        "marked", "markedly", "moderately", "extensive", "subtle", "slight", "slightly", "significant", "stable",
        "unchanged", "persistent", "persisting", "new", "increased", "increasing", "decreased", "decreasing",
        "worsening", "worsened", "improved", "improving", "resolving", "residual", "chronic", "old", "healed",
        "healing", "recurrent", "redemonstrated", "again", "continued", "left", "right", "bilateral", "bibasilar",
        "a", "an", "the", "this", "these",
    ) + r"|\d)"
)
LIST_CLOSERS = re.compile(r"\b(?:or|nor|and)\b")
LIST_OPENERS = re.compile(r"\b(?:or|nor)\b|/")
# NegEx's window: a scope reaches at most this many words from its cue.
SCOPE_WORDS = 12
# The cue kinds whose scopes the list rules, terminators and window bound.
BOUNDED = ("pre_neg", "post_neg")


def _compile(phrases: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(r"\b(?:" + p + r")\b" for p in phrases))


@dataclass(frozen=True)
class _Cue:
    start: int
    end: int
    kind: str  # {pre, post, both}_{neg, unc}: which way the cue reaches, and what it means
    # its scope: a mention ending after reach_start (backward) or starting before reach_end
    # (forward), on the cue's side, is in it (set by _scoped)
    reach_start: int = -1
    reach_end: int = 0


class _Mention(NamedTuple):
    """One mention in a normalized sentence: its class, its span and the span of the cue (a
    negation, an uncertainty or an attribute) that gave it that class, if one did."""

    name: str
    certainty: int
    start: int
    end: int
    cue_start: int | None = None
    cue_end: int | None = None


_TOKEN = re.compile(r"\S+")


def _normalize(sentence: str) -> str:
    """The sentence as the rules read it: lower case, one space between words (mention phrases
    are written with single spaces, and a tab or a doubled space, a form change, see
    cxrlabel.perturb, must not hide a mention)."""
    return " ".join(sentence.lower().split())


def _origins(sentence: str) -> list[int]:
    """Per character of ``_normalize(sentence)``, the index in ``sentence`` of the character it
    comes from (a joining space: the whitespace just before the next word; a character that
    lower-cases to two, such as "İ": both point to it)."""
    origins: list[int] = []
    for match in _TOKEN.finditer(sentence):
        if origins:
            origins.append(match.start() - 1)
        token = match.group()
        if len(token.lower()) == len(token):
            origins.extend(range(match.start(), match.end()))
        else:
            for i, char in enumerate(token):
                origins.extend([match.start() + i] * len(char.lower()))
    return origins


class RuleLabeler:
    """Labels report texts with the rules above; stateless after construction and deterministic."""

    name = "rule"
    provides_evidence = True

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
        self.attributes = (self.borderline, self.normal, self.abnormal)

    def label(self, text: str) -> Labels:
        """The 14 labels of one report (1, 0, -1 or None for blank)."""
        return aggregate_mentions(self.sentence_labels(sentence) for sentence in split_sentences(text))

    def sentence_labels(self, sentence: str) -> Labels:
        """The labels of one sentence's mentions, aggregated; No Finding (a report-level label) is blank."""
        return _sentence_labels(self._sentence_mentions(_normalize(sentence)))

    def label_batch(self, texts: Sequence[str], evidence: bool = False) -> list[Labeled]:
        """The labels of each text; with ``evidence``, each label's evidence too (slower, same labels)."""
        if evidence:
            return [self.label_with_evidence(text) for text in texts]
        return [Labeled(self.label(text)) for text in texts]

    def label_with_evidence(self, text: str) -> Labeled:
        """The labels of one report (equal to :meth:`label`'s) and, per non-blank label, its evidence.

        The evidence of an observation is the first mention in text order whose class is the
        report's class (positive > uncertain > negative decided it), as offsets into ``text``
        itself: ``text[e.start:e.end] == e.quote``. A mention of heart size or the mediastinum
        judged by its attribute spans both ("heart size is normal"). The cue is the negation or
        uncertainty trigger that reached the mention, the nearest to it where several did, or the
        attribute that made an anchor negative or uncertain; None for a plain positive mention
        (or one made positive by its attribute). No Finding's evidence is None: it is positive
        when no pathology is positive or uncertain, which no span of text shows.
        """
        spans = sentence_spans(text)
        by_sentence: list[Labels] = []
        candidates: dict[str, list[tuple[int, _Mention]]] = {}
        for index, (start, end) in enumerate(spans):
            mentions = list(self._sentence_mentions(_normalize(text[start:end])))
            by_sentence.append(_sentence_labels(mentions))
            for mention in mentions:
                candidates.setdefault(mention.name, []).append((index, mention))
        labels = aggregate_mentions(by_sentence)
        evidence: dict[str, Evidence | None] = {}
        origins: dict[int, list[int]] = {}
        for name in OBSERVATIONS:
            value = labels[name]
            if value is None:
                continue
            if name == NO_FINDING:
                evidence[name] = None
                continue
            index, mention = min(((i, m) for i, m in candidates[name] if m.certainty == value), key=lambda im: (im[0], im[1].start))
            sentence_start = spans[index][0]
            if index not in origins:
                origins[index] = _origins(text[sentence_start:spans[index][1]])

            def offsets(start: int, end: int) -> tuple[int, int]:
                return sentence_start + origins[index][start], sentence_start + origins[index][end - 1] + 1  # noqa: B023

            start, end = offsets(mention.start, mention.end)
            cue_start = cue_end = cue = None
            if mention.cue_start is not None and mention.cue_end is not None:
                cue_start, cue_end = offsets(mention.cue_start, mention.cue_end)
                cue = text[cue_start:cue_end]
            evidence[name] = Evidence(start, end, text[start:end], cue_start, cue_end, cue)
        return Labeled(labels, evidence=evidence)

    def _sentence_mentions(self, sentence: str) -> Iterable[_Mention]:
        sentence = self.pseudo.sub(lambda m: " " * len(m.group()), sentence)
        found = self._cues(sentence)
        layout = _Layout(sentence, found)
        cues = _Scopes([_scoped(cue, layout) for cue in found])
        for name, pattern in self.mentions.items():
            masked = sentence
            if name in self.exclusions:
                masked = self.exclusions[name].sub(lambda m: " " * len(m.group()), sentence)
            for match in pattern.finditer(masked):
                if not cues.inside(match.start(), match.end()):
                    certainty, cue = _decide(match.start(), match.end(), cues.near(match.start(), match.end()))
                    yield _Mention(name, certainty, match.start(), match.end(), *((cue.start, cue.end) if cue else ()))
        following = _Following(sentence, self.attributes)
        for name, pattern in self.anchors.items():
            for match in pattern.finditer(sentence):
                attribute = self._attribute(layout, match, following)
                if attribute is not None:
                    value, at_start, at_end = attribute
                    start, end = min(match.start(), at_start), max(match.end(), at_end)
                    certainty, cue = _decide(match.start(), match.end(), cues.near(match.start(), match.end()))
                    if certainty != POSITIVE and cue is not None:
                        yield _Mention(name, certainty, start, end, cue.start, cue.end)
                    else:
                        yield _Mention(name, value, start, end, *((at_start, at_end) if value != POSITIVE else ()))

    def _cues(self, sentence: str) -> list[_Cue]:
        cues: list[_Cue] = []
        taken = [False] * (len(sentence) + 1)
        for kind, pattern in self.cue_patterns:
            for m in pattern.finditer(sentence):
                if not any(taken[m.start():m.end()]):
                    cues.append(_Cue(m.start(), m.end(), kind))
                    taken[m.start():m.end()] = [True] * (m.end() - m.start())
        return cues

    def _attribute(self, layout: _Layout, anchor: re.Match[str], following: _Following) -> tuple[int, int, int] | None:
        """The certainty an attribute gives a heart-size or mediastinum anchor and the attribute's
        span in the sentence, None when it has none.

        The attribute may follow the anchor in its clause ("heart size is normal") or stand
        just before it ("normal heart size", "enlarged cardiac silhouette").
        """
        after = bisect_left(layout.breaks, anchor.end())
        end = layout.breaks[after] if after < len(layout.breaks) else len(layout.text)
        attribute = _judged(layout, anchor.end(), 0, *following.search(anchor.end(), end))
        if attribute is None:
            before_start = max(0, anchor.start() - 25)
            before = layout.text[before_start:anchor.start()]
            attribute = _judged(layout, before_start, before_start, *(pattern.search(before) for pattern in self.attributes))
        return attribute


def _judged(
    layout: _Layout, start: int, offset: int, borderline: re.Match[str] | None, normal: re.Match[str] | None, abnormal: re.Match[str] | None,
) -> tuple[int, int, int] | None:
    """The certainty and span of the attribute that decides, given the first borderline, normal and
    abnormal attribute of the window that starts at ``start`` (``offset`` plus a match's position is
    its position in the sentence)."""
    if borderline:
        return UNCERTAIN, offset + borderline.start(), offset + borderline.end()
    if normal and (not abnormal or normal.start() <= abnormal.start() or "not" in _last_words(layout, start, offset + abnormal.start(), 2)):
        return NEGATIVE, offset + normal.start(), offset + normal.end()
    if abnormal:
        return POSITIVE, offset + abnormal.start(), offset + abnormal.end()
    return None


def _last_words(layout: _Layout, start: int, end: int, n: int) -> list[str]:
    """``layout.text[start:end].split()[-n:]``, from the word index rather than a copy of the span
    (which may reach back across a whole long clause): the last ``n`` words that begin before
    ``end``, cut to the span."""
    starts, ends = layout.words
    i = bisect_left(starts, end)
    pieces = (layout.text[max(s, start):min(e, end)] for s, e in zip(starts[max(0, i - n):i], ends[max(0, i - n):i]) if e > start)
    return [piece for piece in pieces if piece]


class _Following:
    """The first match of each of ``patterns`` in ``text[pos:endpos]``, for windows that share their
    end and move right: the anchors of one clause, each searched to the clause's end. A pattern's
    last search to that end still answers if it found nothing, or a match at or after the new
    ``pos``, so a long clause is scanned about once, not once per anchor in it.

    It searches in place, not in a slice, and finds the same matches: ``pos`` is where an anchor
    ends, on a word boundary, and every attribute starts with a letter.
    """

    def __init__(self, text: str, patterns: tuple[re.Pattern[str], ...]) -> None:
        self.text, self.patterns = text, patterns
        self.last: list[tuple[int, int, re.Match[str] | None]] = [(-1, -1, None)] * len(patterns)  # (endpos, pos, match)

    def search(self, pos: int, endpos: int) -> list[re.Match[str] | None]:
        found = []
        for i, pattern in enumerate(self.patterns):
            last_end, since, match = self.last[i]
            if not (last_end == endpos and since <= pos and (match is None or pos <= match.start())):
                match = pattern.search(self.text, pos, endpos)
                self.last[i] = (endpos, pos, match)
            found.append(match)
        return found


def _sentence_labels(mentions: Iterable[_Mention]) -> Labels:
    """A sentence's labels from its mentions; No Finding (a report-level label) is blank."""
    found: dict[str, set[int]] = {}
    for mention in mentions:
        found.setdefault(mention.name, set()).add(mention.certainty)
    return {NO_FINDING: None} | {name: _aggregate(found[name]) if name in found else None for name in OBSERVATIONS[1:]}


def _decide(start: int, end: int, cues: list[_Cue]) -> tuple[int, _Cue | None]:
    """Uncertain if an uncertainty cue reaches the mention, else negative if a negation does, else
    positive; with the cue that decided it (the nearest of that meaning), None for positive."""
    reaching = [cue for cue in cues if _reaches(cue, start, end)]
    if not reaching:
        return POSITIVE, None
    negations = [cue.start for cue in reaching if cue.kind == "pre_neg"]
    uncertain = [cue for cue in reaching if cue.kind.endswith("unc")]
    # "no suspicious opacity": an uncertainty word inside a negation's scope is negated too
    if uncertain and not (negations and min(negations) < min(cue.start for cue in uncertain)):
        return UNCERTAIN, _nearest(uncertain, start, end)
    negating = [cue for cue in reaching if cue.kind.endswith("neg")]
    if negating:
        return NEGATIVE, _nearest(negating, start, end)
    return POSITIVE, None


def _nearest(cues: list[_Cue], start: int, end: int) -> _Cue:
    """The cue closest to the mention at ``start:end`` (the first of equals)."""
    return min(cues, key=lambda cue: start - cue.end if cue.end <= start else cue.start - end)


def _reaches(cue: _Cue, start: int, end: int) -> bool:
    """Whether ``cue`` reaches the mention at ``start:end``: in its direction, within its scope."""
    if cue.kind.startswith(("pre", "both")) and cue.end <= start:
        return start < cue.reach_end
    if cue.kind.startswith(("post", "both")) and cue.start >= end:
        return end > cue.reach_start
    return False


class _Words(NamedTuple):
    """Where a sentence's words (``\\S+``) start and end, for the scope window."""

    starts: list[int]
    ends: list[int]


class _Layout:
    """A (normalized, pseudo-negation masked) sentence and where its clause breaks, commas, words
    and cues lie, found once per sentence: scoping a cue or finding an anchor's attribute then
    takes bisections, not a scan of the clause (which made a long sentence quadratic)."""

    def __init__(self, text: str, cues: list[_Cue]) -> None:
        self.text = text
        self.breaks = [m.start() for m in CLAUSE_BREAKS.finditer(text)]
        self.commas = [i for i, char in enumerate(text) if char == ","]
        tokens = list(_TOKEN.finditer(text))
        self.words = _Words([m.start() for m in tokens], [m.end() for m in tokens])
        self.cue_starts = {cue.start for cue in cues}

    @cached_property
    def stops(self) -> list[int]:
        """Clause breaks and commas, in order: where a two-way cue's backward scope stops."""
        return sorted(self.breaks + self.commas)

    @cached_property
    def closers(self) -> list[int]:
        """Where ``LIST_CLOSERS`` start."""
        return [m.start() for m in LIST_CLOSERS.finditer(self.text)]


class _Scopes:
    """A sentence's scoped cues: which of them lies around a mention, and which may decide it.

    With more than a few cues they are indexed by position, as testing every cue against every
    mention is quadratic in a long sentence. :func:`_decide` reads, of the cues that reach a
    mention, only the earliest (does an uncertainty come before any "pre" negation?) and the nearest
    (the cue it reports), so per kind and direction the earliest and the nearest cue that reach it
    decide as all of them do, taken in the cues' order, which breaks :func:`_nearest`'s ties. Cues
    do not overlap: per kind their starts and ends ascend together, and a running maximum of the
    forward reaches (minimum of the backward ones, from the end) finds by bisection where the cues
    that reach a mention begin (end). Only a negation's scope stops short of a mention that an
    earlier (later) cue of its kind reaches, and it ends within ``SCOPE_WORDS`` words: the scan
    from the mention to the nearest cue that reaches it is short.
    """

    #: Up to this many cues (most sentences have none or one), testing each is cheaper than the index.
    few = 8

    def __init__(self, cues: list[_Cue]) -> None:
        self.cues = cues
        self.indexed = len(cues) > self.few
        if not self.indexed:
            return
        spans = sorted((cue.start, cue.end) for cue in cues)
        self.starts, self.ends = [start for start, _ in spans], [end for _, end in spans]
        by_kind: dict[str, list[int]] = {}
        for rank, cue in enumerate(cues):
            by_kind.setdefault(cue.kind, []).append(rank)  # in text order
        self.forward: list[tuple[list[int], list[int], list[int], list[int]]] = []
        self.backward: list[tuple[list[int], list[int], list[int], list[int]]] = []
        for kind, ranks in by_kind.items():
            if kind.startswith(("pre", "both")):
                reach_ends = [cues[rank].reach_end for rank in ranks]
                self.forward.append((ranks, [cues[rank].end for rank in ranks], reach_ends, list(accumulate(reach_ends, max))))
            if kind.startswith(("post", "both")):
                reach_starts = [cues[rank].reach_start for rank in ranks]
                suffix_min = list(accumulate(reversed(reach_starts), min))[::-1]
                self.backward.append((ranks, [cues[rank].start for rank in ranks], reach_starts, suffix_min))

    def inside(self, start: int, end: int) -> bool:
        """Whether ``start:end`` lies within a cue."""
        if not self.indexed:
            return any(cue.start <= start and end <= cue.end for cue in self.cues)
        i = bisect_right(self.starts, start) - 1  # the only cue that may hold it: cues do not overlap
        return i >= 0 and end <= self.ends[i]

    def near(self, start: int, end: int) -> list[_Cue]:
        """Cues among which :func:`_decide` finds the class of the mention at ``start:end``: all the
        cues, or with the index, per kind and direction the earliest and the nearest that reach it."""
        if not self.indexed:
            return self.cues
        found: set[int] = set()
        for ranks, ends, reach_ends, prefix_max in self.forward:
            # cues ending at or before the mention, from the first whose scope goes past its start
            first, stop = bisect_right(prefix_max, start), bisect_right(ends, start)
            if first < stop:
                nearest = next(i for i in range(stop - 1, first - 1, -1) if reach_ends[i] > start)
                found.update((ranks[first], ranks[nearest]))
        for ranks, starts, reach_starts, suffix_min in self.backward:
            # cues starting at or after the mention's end, up to the last whose scope goes back before it
            first, stop = bisect_left(starts, end), bisect_left(suffix_min, end)
            if first < stop:
                found.add(ranks[next(i for i in range(first, stop) if reach_starts[i] < end)])
        return [self.cues[rank] for rank in sorted(found)]


def _scoped(cue: _Cue, layout: _Layout) -> _Cue:
    """``cue`` with its scope: forward to the next clause break, backward to the one before it.

    A two-way cue ("X versus Y") reaches back only within its comma-delimited phrase, so that
    "opacity, possibly atelectasis versus pneumonia" leaves the opacity asserted. A negation's
    scope is bounded further as NegEx and ConText bound theirs (:func:`_forward_end`,
    :func:`_backward_start`), at most ``SCOPE_WORDS`` words from the cue either way.
    """
    after = bisect_left(layout.breaks, cue.end)
    reach_end = layout.breaks[after] if after < len(layout.breaks) else len(layout.text)
    stops = layout.stops if cue.kind.startswith("both") else layout.breaks
    before = bisect_left(stops, cue.start)
    reach_start = stops[before - 1] if before else -1
    if cue.kind in BOUNDED:
        reach_end = _forward_end(cue, layout, reach_end)
        reach_start = _backward_start(cue, layout, reach_start)
    return _Cue(cue.start, cue.end, cue.kind, reach_start, reach_end)


_SEPARATOR = re.compile(r",|\band\b")
_SPACES = re.compile(r"\s*")


def _forward_end(cue: _Cue, layout: _Layout, limit: int) -> int:
    """Where a negation's forward scope ends, before ``limit`` (the clause break).

    It ends at a terminating term ("No pneumothorax with a chest tube in place"), and it crosses
    a comma or "and" only into the items of its list: "No consolidation, large effusion, or
    pneumothorax" negates all three, while "No pneumothorax, large left effusion" and "No edema
    or effusion, mild cardiomegaly" end it at the comma. Unless an "or", "nor" or "/" is still
    to come (the list goes on), a separator ends it where a new cue or a new finding follows (a
    size, severity, change, side, determiner or number: ``NEW_FINDING``), and a comma also where
    a list conjunction ("or", "nor", "and") came before it.
    """
    sentence, words, cue_starts = layout.text, layout.words, layout.cue_starts
    first = bisect_left(words.starts, cue.end)
    if first + SCOPE_WORDS < len(words.starts):
        limit = min(limit, words.starts[first + SCOPE_WORDS])
    terminator = TERMINATORS.search(sentence, cue.end, limit)
    if terminator:
        limit = terminator.start()
    for separator in _SEPARATOR.finditer(sentence, cue.end, limit):
        at = separator.start()
        after = _SPACES.match(sentence, separator.end()).end()
        after_and = after + 4 if sentence.startswith("and ", after) else after
        if LIST_OPENERS.search(sentence, separator.end(), limit):
            continue  # an item of a list that an "or", "nor" or "/" still closes
        if after in cue_starts or after_and in cue_starts or NEW_FINDING.match(sentence, after):
            return at
        if separator.group() == "," and LIST_CLOSERS.search(sentence, cue.end, at):
            return at
    return limit


def _backward_start(cue: _Cue, layout: _Layout, limit: int) -> int:
    """Where a negation's backward scope starts, after ``limit`` (the clause break before it).

    It crosses a comma only into a list that its own phrase closes: "Effusion, consolidation, or
    pneumothorax is not seen" negates all three, "Chest tube in place, pneumothorax not seen" only
    the pneumothorax.
    """
    commas, words = layout.commas, layout.words
    before = bisect_left(commas, cue.start)
    # no list closer between that comma and the cue (looked up, not searched: a clause may be long)
    if before and commas[before - 1] > limit and bisect_left(layout.closers, commas[before - 1]) == bisect_left(layout.closers, cue.start):
        limit = commas[before - 1]
    last = bisect_right(words.ends, cue.start)  # the words that end before the cue
    return max(limit, words.ends[last - SCOPE_WORDS - 1]) if last > SCOPE_WORDS else limit


def _aggregate(certainties: set[int]) -> int:
    """Across the mentions of one observation: positive beats uncertain beats negative."""
    return next(certainty for certainty in AGGREGATION_ORDER if certainty in certainties)
