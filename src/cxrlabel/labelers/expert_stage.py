"""Expert corrections: a report-level stage, trained on expert labels, after any labeler.

A labeler trained on silver labels follows its teacher's conventions; expert labels follow the
experts'. Where the two differ by convention, the difference is learnable from the expert labels of
the training reports: OpenI's indexers do not index "upper limits of normal heart size" as
cardiomegaly, nor call a report normal that records a granuloma. This stage learns it.

For each observation with at least ``min_positives`` expert positives among the training reports,
a report's logit is the sum of

- a learned weight for the labeler's own label of it (positive, uncertain, negative or blank), and
- a smooth maximum over the report's sentences of a linear head on their frozen embeddings
  (:func:`cxrlabel.labelers.no_finding.bag_logsumexp`: a finding is stated in at least one sentence;
  No Finding reads the other way round: a report is normal when none of its sentences is abnormal).

Positive-only expert labels (OpenI's) say only what was indexed as present. The stage's target is
exactly that, and it never writes a negative: a label it accepts becomes positive, a positive it
rejects becomes uncertain (mentioned, not what the experts call present), every other label is kept.
No Finding is the stage's own decision (it read the uncertain mentions as the experts do), except
that a report with a pathology left positive is never normal.

It is trained on the teacher's labels of the training reports (their silver labels), so that it
corrects any labeler whose labels follow that teacher: the teacher itself, and the LLM and BERT
labelers trained on its labels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file

from cxrlabel.embedding import Embedder
from cxrlabel.io.labels import read_labels
from cxrlabel.labelers import Labeled, Labels
from cxrlabel.labelers.no_finding import bag_logsumexp, fit_report_head, save_report_head, sentences_of
from cxrlabel.observations import NO_FINDING, OBSERVATIONS, PATHOLOGIES, apply_no_finding_rule

log = logging.getLogger(__name__)

WEIGHTS_FILE, SETTINGS_FILE = "expert_stage.safetensors", "cxrlabel_expert_stage.json"

#: The labeler's label of an observation, as the stage reads it (one learned weight each).
LABEL_CLASSES: tuple[int | None, ...] = (1, -1, 0, None)


@dataclass(frozen=True)
class ExpertStageSettings:
    """Training settings, saved beside the weights (the encoder too: null = the packaged MiniLM)."""

    encoder: str | None = None
    min_positives: int = 80
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 1e-2
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 2


def label_classes(labels: Sequence[Labels], observations: Sequence[str]) -> torch.Tensor:
    """One-hot of each report's label of each observation over :data:`LABEL_CLASSES`: (n, K, 4)."""
    index = torch.tensor([[LABEL_CLASSES.index(item.get(name)) for name in observations] for item in labels], dtype=torch.long)
    return torch.nn.functional.one_hot(index.reshape(len(labels), len(observations)), len(LABEL_CLASSES)).float()


class ExpertStageHead(torch.nn.Module):
    """Report logits (> 0: the experts would call it present; No Finding: normal) of K observations."""

    def __init__(self, dimension: int, observations: Sequence[str]) -> None:
        super().__init__()
        self.observations = tuple(observations)
        self.sentence = torch.nn.Linear(dimension, len(self.observations))
        self.label_weight = torch.nn.Parameter(torch.zeros(len(self.observations), len(LABEL_CLASSES)))
        self.register_buffer("direction", torch.tensor([-1.0 if name == NO_FINDING else 1.0 for name in self.observations]))

    def forward(self, embeddings: torch.Tensor, bags: Sequence[Sequence[int]], classes: torch.Tensor) -> torch.Tensor:
        sentences = self.sentence(embeddings[[i for bag in bags for i in bag]])
        return self.direction * bag_logsumexp(sentences, bags) + (classes * self.label_weight).sum(-1)


class ExpertStage:
    """A trained stage (:meth:`load` reads one from its folder) and the corrections it makes."""

    def __init__(self, embedder: Embedder, head: ExpertStageHead) -> None:
        self.embedder, self.head = embedder, head

    @property
    def observations(self) -> tuple[str, ...]:
        return self.head.observations

    @classmethod
    def load(cls, model_dir: str, threads: int | None = None) -> ExpertStage:
        path = Path(model_dir)
        if not (path / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{model_dir}: not a cxrlabel expert stage (no {WEIGHTS_FILE})")
        saved = json.loads((path / SETTINGS_FILE).read_text())
        settings = ExpertStageSettings(**saved["settings"])
        embedder = Embedder(settings.encoder, threads)
        head = ExpertStageHead(embedder.dimension, saved["observations"])
        head.load_state_dict(load_file(path / WEIGHTS_FILE))
        return cls(embedder, head)

    @torch.inference_mode()
    def logits(self, texts: Sequence[str], labels: Sequence[Labels]) -> np.ndarray:
        """(n, K) report logits of :attr:`observations` given the labeler's labels of ``texts``."""
        distinct, bags = sentences_of(texts)
        embeddings = torch.from_numpy(self.embedder.embed(distinct))
        return self.head(embeddings, bags, label_classes(labels, self.observations)).numpy()

    def correct(self, texts: Sequence[str], labeled: Sequence[Labeled]) -> list[Labeled]:
        """The labeler's labels of ``texts`` corrected as the module docstring says; a changed
        label loses its scores (they were the labeler's, for the label it gave)."""
        accepted = self.logits(texts, [item.labels for item in labeled]) > 0
        return [self._corrected(item, dict(zip(self.observations, row))) for item, row in zip(labeled, accepted)]

    def _corrected(self, item: Labeled, accepted: dict[str, bool]) -> Labeled:
        labels = dict(item.labels)
        for name, accept in accepted.items():
            if name != NO_FINDING:
                labels[name] = 1 if accept else (-1 if labels.get(name) == 1 else labels.get(name))
        if NO_FINDING in accepted:
            finding = any(labels.get(name) == 1 for name in PATHOLOGIES)
            labels[NO_FINDING] = 1 if accepted[NO_FINDING] and not finding else None
        else:
            labels = apply_no_finding_rule(labels)
        changed = {name for name in OBSERVATIONS if labels.get(name) != item.labels.get(name)}
        if not changed:
            return item
        scores = {k: v for k, v in (item.scores or {}).items() if k not in changed} if item.scores is not None else None
        return replace(item, labels=labels, scores=scores)


def staged_observations(expert_positive: np.ndarray, min_positives: int) -> list[str]:
    """The observations the stage decides: those with at least ``min_positives`` expert positives
    (and a report without one) among the training reports; the rest stay the labeler's."""
    positives = expert_positive.sum(axis=0)
    return [name for name, n in zip(OBSERVATIONS, positives) if min_positives <= n < len(expert_positive)]


def train_expert_stage(texts: Sequence[str], teacher: Sequence[Labels], expert_positive: np.ndarray, out_dir: str,
                       settings: ExpertStageSettings) -> ExpertStage:
    """Train on the training reports, their teacher's labels and their expert positives
    (``expert_positive``: (n, 14) booleans in :data:`OBSERVATIONS` order); save to ``out_dir``."""
    observations = staged_observations(expert_positive, settings.min_positives)
    if not observations:
        raise ValueError(f"the expert stage needs an observation with at least {settings.min_positives} expert positives "
                         f"among the {len(texts)} training reports; none has")
    torch.manual_seed(settings.seed)
    embedder = Embedder(settings.encoder, settings.threads)
    distinct, bags = sentences_of(texts)
    log.info("expert stage: %d training reports, %d distinct sentences, observations %s", len(texts), len(distinct), observations)
    embeddings = torch.from_numpy(embedder.embed(distinct))
    classes = label_classes(teacher, observations)
    target = torch.from_numpy(expert_positive[:, [OBSERVATIONS.index(name) for name in observations]].astype(np.float32))
    head = ExpertStageHead(embedder.dimension, observations)
    final_loss = fit_report_head(head, lambda batch: head(embeddings, [bags[i] for i in batch], classes[batch]), target, settings, "expert stage")
    summary = {"training_reports": len(texts), "positives": dict(zip(OBSERVATIONS, map(int, expert_positive.sum(axis=0)))), "final_loss": final_loss}
    save_report_head(head, Path(out_dir) / WEIGHTS_FILE, Path(out_dir) / SETTINGS_FILE,
                     {"settings": asdict(settings), "observations": observations, "training": summary})
    log.info("expert stage: %s", summary)
    return ExpertStage(embedder, head)


def load_expert_stage(model_dir: str | None, threads: int | None = None) -> ExpertStage | None:
    """A trained labeler's expert stage, or None where it has none."""
    if not model_dir:
        return None
    log.info("expert stage: labels corrected by the learned model in %s", model_dir)
    return ExpertStage.load(model_dir, threads)


def apply_expert_stage(stage: ExpertStage | None, texts: Sequence[str], labeled: list[Labeled]) -> list[Labeled]:
    """``labeled`` (the labels of ``texts``) corrected by ``stage``, if any."""
    return labeled if stage is None else stage.correct(texts, labeled)


def train_expert_stage_on_split(reports_path: str, silver_path: str, expert_path: str, out_dir: str, settings: ExpertStageSettings) -> ExpertStage:
    """Train on the expert-labeled training reports (``expert_path``: the targets rule's expert
    labels of the train split), their silver labels (``silver_path``: the teacher's) and texts. A
    training report without expert labels is left out: positive-only labels that are absent say
    nothing, they are not all negative."""
    reports = pl.read_parquet(reports_path, columns=["study_id", "split", "text"]).filter(pl.col("split") == "train")
    expert, _ = read_labels(expert_path)
    train = reports.join(expert.select("study_id", *OBSERVATIONS), on="study_id", how="inner", maintain_order="left")
    silver = pl.read_parquet(silver_path, columns=["study_id", *OBSERVATIONS])
    teacher = train.select("study_id").join(silver, on="study_id", how="left", maintain_order="left").drop("study_id")
    positive = train.select((pl.col(name) == 1).fill_null(False) for name in OBSERVATIONS).to_numpy()
    return train_expert_stage(train["text"].to_list(), teacher.to_dicts(), positive, out_dir, settings)
