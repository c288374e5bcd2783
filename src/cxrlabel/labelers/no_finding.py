"""No Finding as the experts decide it: a report-level stage for a labeler that reads sentences.

The CheXpert convention makes No Finding positive whenever none of the 12 pathologies is positive
or uncertain. Expert indexers do not call a report normal when it records findings outside the 14
observations (granulomas, degenerative changes of the spine, a tortuous aorta, hyperinflation): of
the OpenI training reports the rule labeler calls normal, 402 of 952 are not indexed as normal. A
labeler that labels one sentence at a time cannot learn this from sentence labels, and the silver
labels never show it.

This stage learns it from the expert labels. Each sentence gets an abnormality logit, a linear head
over its frozen sentence embedding (:class:`cxrlabel.embedding.Embedder`); a report's logit is a
smooth maximum of its sentences' (multiple-instance learning: every sentence of a normal report is
normal, an abnormal report has at least one abnormal sentence), trained with binary cross entropy against
"the experts did not call this report normal". A labeler with the stage gives No Finding exactly
when its own rule does (no pathology found) and the stage finds the report normal.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from cxrlabel.embedding import Embedder
from cxrlabel.io.labels import read_labels
from cxrlabel.labelers import Labeled
from cxrlabel.observations import NO_FINDING
from cxrlabel.text import split_sentences

log = logging.getLogger(__name__)

HEAD_FILE, SETTINGS_FILE = "no_finding_head.safetensors", "cxrlabel_no_finding.json"


@dataclass(frozen=True)
class NoFindingSettings:
    """Training settings, saved beside the head (the encoder too: null = the packaged MiniLM)."""

    encoder: str | None = None
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 1e-2
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 2


def sentences_of(texts: Sequence[str]) -> tuple[list[str], list[list[int]]]:
    """The distinct sentences of ``texts`` and, per text, the indices of its sentences (a text
    without a sentence is one empty sentence, so that every report has a score)."""
    distinct: dict[str, int] = {}
    bags = [[distinct.setdefault(sentence, len(distinct)) for sentence in (split_sentences(text) or [""])] for text in texts]
    return list(distinct), bags


def bag_logsumexp(logits: torch.Tensor, bags: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per bag (report), the log-sum-exp of its rows of ``logits`` (one row per member sentence,
    bags concatenated in order; (S,) or (S, K) -> (B,) or (B, K)): a smooth maximum. Unlike the
    maximum itself it passes gradient to every sentence, so that training cannot settle where a
    normal sentence is every bag's largest and the abnormal ones never learn."""
    index = torch.tensor([b for b, bag in enumerate(bags) for _ in bag])
    index = index.reshape(-1, *([1] * (logits.dim() - 1))).expand_as(logits)
    shape = (len(bags), *logits.shape[1:])
    largest = torch.full(shape, -torch.inf).scatter_reduce(0, index, logits.detach(), reduce="amax")
    total = torch.zeros(shape).scatter_add(0, index, torch.exp(logits - largest.gather(0, index)))
    return largest + torch.log(total)


def report_logits(head: torch.nn.Linear, embeddings: torch.Tensor, bags: Sequence[Sequence[int]]) -> torch.Tensor:
    """Each bag's (report's) abnormality logit: :func:`bag_logsumexp` of its sentences' logits."""
    return bag_logsumexp(head(embeddings[[i for bag in bags for i in bag]]).squeeze(-1), bags)


class NoFindingModel:
    """The stage: which reports are normal (:meth:`load` reads a trained one from its folder)."""

    def __init__(self, embedder: Embedder, head: torch.nn.Linear) -> None:
        self.embedder, self.head = embedder, head

    @classmethod
    def load(cls, model_dir: str, threads: int | None = None) -> NoFindingModel:
        path = Path(model_dir)
        if not (path / HEAD_FILE).is_file():
            raise FileNotFoundError(f"{model_dir}: not a cxrlabel No Finding model (no {HEAD_FILE}); train one with the no_finding_model rule")
        settings = NoFindingSettings(**json.loads((path / SETTINGS_FILE).read_text())["settings"])
        embedder = Embedder(settings.encoder, threads)
        head = torch.nn.Linear(embedder.dimension, 1)
        head.load_state_dict(load_file(path / HEAD_FILE))
        return cls(embedder, head)

    @torch.inference_mode()
    def abnormality(self, texts: Sequence[str]) -> np.ndarray:
        """Each report's abnormality logit (> 0: not normal)."""
        distinct, bags = sentences_of(texts)
        embeddings = torch.from_numpy(self.embedder.embed(distinct))
        return report_logits(self.head, embeddings, bags).numpy()

    def normal(self, texts: Sequence[str]) -> list[bool]:
        return (self.abnormality(texts) <= 0).tolist()


def load_no_finding(model_dir: str | None, threads: int | None = None) -> NoFindingModel | None:
    """A labeler's learned No Finding model, or None where it has none."""
    if not model_dir:
        return None
    log.info("No Finding: also normal by the learned model in %s", model_dir)
    return NoFindingModel.load(model_dir, threads)


def apply_no_finding_model(model: NoFindingModel | None, texts: Sequence[str], labeled: list[Labeled]) -> list[Labeled]:
    """A labeler's labels of ``texts`` with No Finding kept only where ``model`` (if any) finds the
    report normal too; a cleared No Finding loses its scores."""
    if model is None:
        return labeled
    return [
        item if normal else replace(item, labels=item.labels | {NO_FINDING: None}, scores={k: v for k, v in (item.scores or {}).items() if k != NO_FINDING})
        for item, normal in zip(labeled, model.normal(texts))
    ]


def fit_report_head(head: torch.nn.Module, logits_of: Callable[[list[int]], torch.Tensor], target: torch.Tensor, settings, desc: str) -> float:
    """Fit ``head`` (AdamW, binary cross entropy) on mini-batches of report indices, shuffled each
    epoch by ``settings.seed`` (``settings``: a head's training settings, with ``epochs``,
    ``batch_size``, ``learning_rate``, ``weight_decay``): ``logits_of(batch)`` gives the batch's report logits against
    ``target[batch]``. Returns the last batch's loss."""
    rng = random.Random(settings.seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    order = list(range(len(target)))
    for _ in tqdm(range(settings.epochs), desc=desc, unit="epoch", mininterval=5):
        rng.shuffle(order)
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits_of(batch), target[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return loss.item()


def save_report_head(head: torch.nn.Module, weights_path: Path, record_path: Path, record: dict) -> None:
    """Save a report-level head's weights and, beside them, its JSON record (settings, metrics)."""
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, weights_path)
    record_path.write_text(json.dumps(record, indent=2) + "\n")


def train_no_finding(texts: Sequence[str], normal: Sequence[bool], out_dir: str, settings: NoFindingSettings,
                     validate: tuple[Sequence[str], Sequence[bool]] | None = None) -> dict[str, float]:
    """Train the head on reports and whether the experts called each normal; save it to ``out_dir``
    with its settings and metrics (the F1 of "normal" on ``validate``, where given)."""
    torch.manual_seed(settings.seed)
    embedder = Embedder(settings.encoder, settings.threads)
    distinct, bags = sentences_of(texts)
    log.info("no finding: %d training reports (%d normal), %d distinct sentences", len(texts), sum(normal), len(distinct))
    embeddings = torch.from_numpy(embedder.embed(distinct))
    abnormal = torch.tensor([not n for n in normal], dtype=torch.float32)
    head = torch.nn.Linear(embedder.dimension, 1)
    final_loss = fit_report_head(head, lambda batch: report_logits(head, embeddings, [bags[i] for i in batch]), abnormal, settings, "no finding head")
    metrics = {"training_reports": len(texts), "training_normal": int(sum(normal)), "final_loss": final_loss}
    if validate:
        predicted = NoFindingModel(embedder, head).normal(validate[0])
        metrics |= {"validate_reports": len(predicted), "validate_f1": _f1(validate[1], predicted)}
    save_report_head(head, Path(out_dir) / HEAD_FILE, Path(out_dir) / SETTINGS_FILE, {"settings": asdict(settings), "metrics": metrics})
    log.info("no finding: %s", metrics)
    return metrics


def _f1(truth: Sequence[bool], predicted: Sequence[bool]) -> float:
    tp = sum(t and p for t, p in zip(truth, predicted))
    wrong = sum(t != p for t, p in zip(truth, predicted))
    return 2 * tp / (2 * tp + wrong) if tp or wrong else float("nan")


def train_no_finding_on_split(reports_path: str, expert_path: str, gold_path: str, out_dir: str, settings: NoFindingSettings) -> dict[str, float]:
    """Train on the expert-labeled training reports (``expert_path``: their No Finding 1 or not)
    and measure on the validate split's gold labels where they cover it."""
    reports = pl.read_parquet(reports_path, columns=["study_id", "split", "text"])
    expert, _ = read_labels(expert_path)
    train = reports.filter(pl.col("split") == "train").join(expert.select("study_id", NO_FINDING), on="study_id", how="inner", maintain_order="left")
    normal = (train[NO_FINDING] == 1).fill_null(False)
    if not normal.any() or normal.all():
        raise ValueError(f"{expert_path}: the No Finding model needs expert-labeled training reports, normal ones and others ({train.height} here)")
    gold, _ = read_labels(gold_path)
    validate = reports.filter(pl.col("split") == "validate").join(gold.select("study_id", NO_FINDING), on="study_id", how="inner", maintain_order="left")
    held_out = (validate["text"].to_list(), (validate[NO_FINDING] == 1).fill_null(False).to_list()) if validate.height else None
    return train_no_finding(train["text"].to_list(), normal.to_list(), out_dir, settings, held_out)
