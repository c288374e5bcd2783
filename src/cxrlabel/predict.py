"""Predictions: any labeler over a table of reports -> one predictions table schema for all labelers.

``predictions/<labeler>.parquet``: ``study_id``, the 14 observations as Int8 (null = blank),
``format_error``, ``fallback_used`` (always false for labelers that cannot produce malformed
output) and ``truncated`` (the labeler read only part of the report). It is a labels table of kind ``full``, readable with :func:`cxrlabel.io.labels.read_labels`.

``predictions/<labeler>_scores.parquet`` (:func:`predict_split_job`, labelers with scores: bert and
the LLMs): the long scores table of :mod:`cxrlabel.evaluation.calibration` (``study_id``,
``observation``, ``label``, ``class``, ``logit``: per non-blank label, the logit of each class the
labeler chose between), the input of the confidences and their calibration.

``robustness/predictions/<labeler>.parquet`` (:func:`predict_perturbed`) has the same columns plus
``perturbation``, for the perturbed reports whose text changed only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl
from tqdm import tqdm

from cxrlabel.io.labels import LABEL_DTYPE, LABEL_KIND_KEY
from cxrlabel.labelers import Labeled, Labeler
from cxrlabel.observations import OBSERVATIONS

log = logging.getLogger(__name__)

FLAGS = {"format_error": pl.Boolean, "fallback_used": pl.Boolean, "truncated": pl.Boolean}


def labeled_frame(labeled: Sequence[Labeled]) -> pl.DataFrame:
    """The 14 label columns and the two flags for a batch of labeled reports."""
    rows = [{**item.labels, "format_error": item.format_error, "fallback_used": item.fallback_used, "truncated": item.truncated} for item in labeled]
    return pl.DataFrame(rows, schema={**{name: LABEL_DTYPE for name in OBSERVATIONS}, **FLAGS}, orient="row")


def report_stage_options(inputs) -> dict[str, str]:
    """A trained labeler's report-level stages among a rule's ``inputs`` (a Snakemake input or a
    dict), as labeler options: the learned No Finding model (expert.no_finding: learned) and the
    expert stage (expert.stage: learned)."""
    return {name: inputs[name] for name in ("no_finding", "expert_stage") if inputs.get(name)}


def labeler_kind(labeler: str) -> str:
    """The kind (:func:`cxrlabel.labelers.make_labeler`) of a pipeline labeler's name: rule, bert or llm."""
    return labeler if labeler in ("rule", "bert") else "llm"


def prediction_settings(config: dict, labeler: str) -> tuple[str, dict, int]:
    """How the pipeline's ``labeler`` predicts, from the workflow config: its kind, its options
    (:func:`cxrlabel.labelers.make_labeler`'s, but threads) and the reports labeled per call.

    These set the pace only: labels and scores are the same whatever the batch and chunk sizes
    (greedy decoding is tested equal to one prompt at a time, sampling draws per candidate). So
    the scripts read them here rather than through their rules' params, and changing them reruns
    nothing; an LLM's answer room is the one stored with its model.
    """
    kind = labeler_kind(labeler)
    if kind == "llm":
        inference = config["llm"]["inference"]
        return kind, {"batch_size": inference["batch_size"], "name": labeler}, inference["chunk_size"]
    batch_size = config["labelers"][kind]["batch_size"]
    return kind, ({"batch_size": batch_size} if kind == "bert" else {}), batch_size


def predict(labeler: Labeler, reports: pl.DataFrame, chunk_size: int = 64) -> pl.DataFrame:
    """Label every report of ``reports`` (``study_id``, ``text``), in order, with a progress bar."""
    return predict_scored(labeler, reports, chunk_size)[0]


def predict_scored(labeler: Labeler, reports: pl.DataFrame, chunk_size: int = 64) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """:func:`predict`'s table and the labels' scores table
    (:func:`cxrlabel.evaluation.calibration.scores_frame`; empty where no label got scores), None
    for a labeler without scores (:func:`cxrlabel.labelers.supports_scores`)."""
    from cxrlabel.evaluation.calibration import SCORES_SCHEMA, scores_frame
    from cxrlabel.labelers import supports_scores

    texts, ids = reports["text"].to_list(), reports["study_id"].to_list()
    batches, score_batches = [], [pl.DataFrame(schema=SCORES_SCHEMA)]
    with tqdm(total=len(texts), desc=f"labeling ({labeler.name})", unit="report", mininterval=5) as progress:
        for start in range(0, len(texts), chunk_size):
            labeled = labeler.label_batch(texts[start : start + chunk_size])
            batches.append(labeled_frame(labeled))
            score_batches.append(scores_frame(ids[start : start + chunk_size], [item.labels for item in labeled], [item.scores for item in labeled]))
            progress.update(len(batches[-1]))
    labels = pl.concat(batches) if batches else labeled_frame([])
    predictions = pl.concat([reports.select("study_id"), labels], how="horizontal")
    log.info(
        "%s labeled %d reports: %d format errors, %d fallbacks, %d truncated",
        labeler.name, predictions.height, predictions["format_error"].sum(), predictions["fallback_used"].sum(), predictions["truncated"].sum(),
    )
    return predictions, (pl.concat(score_batches) if supports_scores(labeler) else None)


def predict_perturbed(labeler: Labeler, perturbed: pl.DataFrame, chunk_size: int = 64) -> pl.DataFrame:
    """Label the perturbed reports (cxrlabel.perturb.perturbed_reports_table: ``study_id``,
    ``perturbation``, ``text``, ``changed``) whose text changed: ``study_id``, ``perturbation``, then
    the columns of :func:`predict`, in the order of ``perturbed``.

    An unchanged report is the clean report's text, and every labeler is deterministic, so its
    label is the clean prediction (``predictions/<labeler>.parquet``): it is not labeled again.
    A text that several perturbations yield (or one perturbation yields for several reports) is
    labeled once.
    """
    changed = perturbed.filter(pl.col("changed")).select("study_id", "perturbation", "text")
    distinct = changed.unique("text", keep="first", maintain_order=True)
    labels = predict(labeler, distinct.select("study_id", "text"), chunk_size).drop("study_id").with_columns(distinct["text"])
    log.info("%d changed perturbed reports, %d distinct texts", changed.height, distinct.height)
    return changed.join(labels, on="text", how="left", maintain_order="left").drop("text")


def write_predictions(predictions: pl.DataFrame, path: str) -> None:
    predictions.write_parquet(path, metadata={LABEL_KIND_KEY: json.dumps("full")})


def predict_split_job(kind: str, model: str, reports: str, out: str, options: dict, threads: int, chunk_size: int, split: str = "test") -> None:
    """The predict rules' work: label the ``split`` reports of the reports table with a trained
    labeler (:func:`cxrlabel.labelers.make_labeler` ``kind``, ``options``), and write its scores
    beside ``out`` (:func:`scores_path`) where it has them. In a job of N processes
    (:func:`cxrlabel.distributed.launch`) each labels a contiguous share of the reports, on its own
    GPU, into ``<out>.part<rank>`` (and its scores' part): :func:`join_parts` then writes ``out``
    in input order."""
    from cxrlabel.distributed import rank, world_size
    from cxrlabel.labelers import make_labeler

    table = pl.read_parquet(reports, columns=["study_id", "split", "text"]).filter(pl.col("split") == split).drop("split")
    share = -(-table.height // world_size())
    labeler = make_labeler(kind, model, **options, threads=max(1, threads // world_size()))
    predictions, scores = predict_scored(labeler, table.slice(rank() * share, share), chunk_size)
    target = out if world_size() == 1 else part_path(out, rank())
    write_predictions(predictions, target)
    if scores is not None:
        scores.write_parquet(scores_path(out) if world_size() == 1 else part_path(scores_path(out), rank()))


def scores_path(out: str) -> str:
    """Where the scores of the predictions ``out`` go: ``<labeler>.parquet`` -> ``<labeler>_scores.parquet``."""
    return str(out).removesuffix(".parquet") + "_scores.parquet"


def part_path(out: str, rank: int) -> str:
    return f"{out}.part{rank}"


def join_parts(out: str, processes: int) -> None:
    """Join the shares of a job of ``processes`` processes into ``out``, in rank (= input) order,
    and their scores into :func:`scores_path` where the shares wrote some."""
    if processes <= 1:
        return
    parts = [Path(part_path(out, rank)) for rank in range(processes)]
    write_predictions(pl.concat([pl.read_parquet(part) for part in parts]), out)
    score_parts = [Path(part_path(scores_path(out), rank)) for rank in range(processes)]
    if all(part.exists() for part in score_parts):
        pl.concat([pl.read_parquet(part) for part in score_parts]).write_parquet(scores_path(out))
    for part in parts + [part for part in score_parts if part.exists()]:
        part.unlink()
