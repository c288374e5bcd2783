"""Command line: ``cxrlabel label`` labels any CSV of reports in CheXpert format (or JSON lines with
each label's evidence and confidence); ``cxrlabel review`` serves the page on which radiologists judge pairs of
label outputs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm import tqdm

from cxrlabel.io.records import BadInputError
from cxrlabel.labelers import Labeled, label_batch, make_labeler, supports_evidence
from cxrlabel.observations import CSV_SPELLING, OBSERVATIONS

#: Reports per labeling batch by default. The rule labeler gains ~5% from 64 to 1,024 (the per-batch
#: cost of building the output columns); the LLM labeler ~3x from 32 to 1,024 (it labels a batch's
#: distinct sentences once, in length-sorted model batches); docs/benchmarks.md.
DEFAULT_BATCH_SIZES = {"rule": 1024, "bert": 64, "llm": 1024}

log = logging.getLogger(__name__)


def report_texts(batch: pa.RecordBatch, text_columns: list[str]) -> list[str]:
    """The text a labeler reads: the given columns joined with a space."""
    columns = [batch.column(name) for name in text_columns]
    return (pc.binary_join_element_wise(*columns, " ") if len(columns) > 1 else columns[0]).to_pylist()


def label_columns(labeled: Sequence[Labeled]) -> list[pa.Array]:
    """The 14 observation columns of a batch as CheXpert CSV strings (blank: null, an empty cell)."""
    return [pa.array([CSV_SPELLING.get(item.labels[name]) for item in labeled], pa.string()) for name in OBSERVATIONS]


#: The keys a JSON line adds after the input's columns.
JSONL_KEYS = ("labels", "evidence", "confidence", "calibrated")


def json_record(ids: dict[str, str], labeled: Labeled, temperature: float | None = None) -> dict:
    """One report's JSON line: the input's non-text columns, then ``labels`` (all 14 observations,
    canonical order: 1, 0, -1 or null for blank), ``evidence`` (per non-blank label: ``start``,
    ``end``, ``quote``, ``cue``, ``cue_start``, ``cue_end``, offsets into the text the labeler read,
    or null where the label has no span: the rule labeler's No Finding, an LLM label answered
    without a quote or with one the text does not hold; an LLM's evidence has no cue, its ``cue*``
    are null; the whole field is null for a labeler that gives no evidence: bert, and an llm not
    tuned to the ``evidence`` completion format), ``confidence`` (per non-blank label, the
    probability in [0, 1] that it is right: the softmax of the labeler's logits
    (:attr:`Labeled.scores`) divided by ``temperature`` at the label
    (:func:`cxrlabel.evaluation.calibration.confidence`); null where the labeler has no score for
    it: every label of the rule labeler, the LLM's No Finding) and ``calibrated`` (true when the
    confidences used a fitted temperature, ``models/<labeler>.calibration.json``; false: T = 1, or
    no confidences)."""
    labels = {name: None if labeled.labels[name] is None else int(labeled.labels[name]) for name in OBSERVATIONS}
    stated = [name for name in OBSERVATIONS if labels[name] is not None]
    evidence = None
    if labeled.evidence is not None:
        evidence = {name: None if labeled.evidence.get(name) is None else labeled.evidence[name].to_json() for name in stated}
    confidence = dict.fromkeys(stated)
    if labeled.scores is not None:
        from cxrlabel.evaluation.calibration import label_confidences

        confidence |= label_confidences(labeled.scores, labels, 1.0 if temperature is None else temperature)
    calibrated = temperature is not None and labeled.scores is not None
    return {**ids, "labels": labels, "evidence": evidence, "confidence": confidence, "calibrated": calibrated}


def calibration_temperature(labeler_kind: str, model: str | None, calibration: Path | None) -> float | None:
    """The fitted temperature of a labeler's confidences: ``calibration`` (a ``*.calibration.json``
    of the calibrate rule), else ``<model folder>.calibration.json`` beside the model folder where it
    exists (where the workflow writes it), else None (T = 1, uncalibrated). The rule labeler has
    no scores: None."""
    if labeler_kind == "rule":
        return None
    if calibration is None and model is not None:
        beside = Path(str(model).rstrip("/\\") + ".calibration.json")
        calibration = beside if beside.is_file() else None
    if calibration is None:
        return None
    from cxrlabel.evaluation.calibration import Calibration

    fitted = Calibration.load(calibration)
    log.info("confidences at temperature %.3f (%s: fitted on %d validate labels against their %s labels)", fitted.temperature, calibration, fitted.n_labels, fitted.fitted_on)
    return fitted.temperature


def label_csv(input_path: Path, output_path: Path, labeler_kind: str, model: str | None, text_columns: list[str] | None,
              batch_size: int, output_format: str = "csv", calibration: Path | None = None,
              max_new_tokens: int | None = None, no_finding: str | None = None) -> int:
    """Stream ``input_path`` through a labeler into ``output_path``; return the report count.

    ``csv`` (CheXpert format): every input column passes through unchanged (read as text), in
    input order, followed by the 14 observation columns (1.0 / 0.0 / -1.0 / blank).
    ``jsonl``: one JSON object per report, in input order: the input's columns other than the
    text columns (ids, as text), then :func:`json_record`'s ``labels``, ``evidence``,
    ``confidence`` and ``calibrated`` (the temperature: :func:`calibration_temperature`).
    Evidence offsets index the text the labeler read: the text columns joined with one space. An
    LLM quote the report does not hold (its label's evidence is null) is counted
    (:attr:`Labeled.evidence_miss`), and the total logged at the end with the number of labels
    that got a span. Memory is bounded by the batch size either way. ``max_new_tokens``: an LLM's
    answer room (default: the model's recorded one); ``no_finding``: an LLM's learned No Finding
    model (:mod:`cxrlabel.labelers.no_finding`, the pipeline's ``models/no_finding``).
    """
    names = pacsv.open_csv(input_path).schema.names
    if text_columns is None:
        text_columns = ["report"] if "report" in names else [c for c in ("findings", "impression") if c in names]
    missing = [c for c in text_columns if c not in names]
    if not text_columns or missing:
        raise BadInputError(f"{input_path}: line 1 (header): no text column {missing or ''} among {names}: expected 'report' or 'findings'/'impression' (or pass --text-columns)")
    if output_format == "jsonl":
        ids = [c for c in names if c not in text_columns]
        clash = [c for c in ids if c in JSONL_KEYS]
    elif output_format == "csv":
        clash = [c for c in names if c in OBSERVATIONS]
    else:
        raise ValueError(f"unknown output format {output_format!r}: csv or jsonl")
    if clash:
        raise BadInputError(f"{input_path}: line 1 (header): column(s) {clash} would be overwritten by the labels")

    options = {key: value for key, value in (("max_new_tokens", max_new_tokens), ("no_finding", no_finding)) if value is not None}
    labeler = make_labeler(labeler_kind, model, **options)
    reader = pacsv.open_csv(
        input_path,
        read_options=pacsv.ReadOptions(block_size=1 << 20),
        convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in names}, strings_can_be_null=False),
    )
    count = 0
    progress = tqdm(desc=f"labeling ({labeler_kind})", unit="report", mininterval=2)
    chunks = (record_batch.slice(start, batch_size) for record_batch in reader for start in range(0, record_batch.num_rows, batch_size))
    if output_format == "jsonl":
        temperature = calibration_temperature(labeler_kind, model, calibration)
        stated = spans = misses = 0
        with open(output_path, "w", encoding="utf-8", newline="\n") as out, progress:
            for chunk in chunks:
                labeled = label_batch(labeler, report_texts(chunk, text_columns), evidence=True)
                rows = chunk.select(ids).to_pylist()
                out.writelines(json.dumps(json_record(row, item, temperature), ensure_ascii=False) + "\n" for row, item in zip(rows, labeled))
                count += chunk.num_rows
                progress.update(chunk.num_rows)
                for item in labeled:
                    stated += sum(code is not None for code in item.labels.values())
                    spans += sum(e is not None for e in (item.evidence or {}).values())
                    misses += item.evidence_miss
        if supports_evidence(labeler):
            log.info("evidence: %d of %d non-blank labels have a span; %d quotes were not found in their report (evidence null)", spans, stated, misses)
        return count
    schema = pa.schema([(name, pa.string()) for name in (*names, *OBSERVATIONS)])
    options = pacsv.WriteOptions(quoting_style="needed")
    with pacsv.CSVWriter(output_path, schema, write_options=options) as writer, progress:
        for chunk in chunks:
            labels = label_columns(labeler.label_batch(report_texts(chunk, text_columns)))
            writer.write_batch(pa.RecordBatch.from_arrays([*chunk.columns, *labels], schema=schema))
            count += chunk.num_rows
            progress.update(chunk.num_rows)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cxrlabel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    label = commands.add_parser("label", help="label a CSV of reports, writing CheXpert format (or JSON lines with evidence and confidence)")
    label.add_argument("--labeler", choices=list(DEFAULT_BATCH_SIZES), required=True)
    label.add_argument("--model", help="model folder of a trained labeler (bert, llm)")
    label.add_argument("--input", type=Path, required=True, help="CSV with a 'report' column or 'findings'/'impression' columns")
    label.add_argument("--output", type=Path, required=True)
    label.add_argument("--text-columns", help="comma-separated columns joined into the report text (default: report, else findings,impression)")
    label.add_argument("--batch-size", type=int, help="reports per batch (default: rule and llm 1024, bert 64)")
    label.add_argument("--format", choices=["csv", "jsonl"], default="csv",
                       help="csv (default): the input's columns + the 14 in CheXpert format; jsonl: one object per report with "
                       "the input's non-text columns, labels, each label's evidence (rule labeler, and an llm tuned to the "
                       "evidence completion format; null for bert and other llm models) and confidence "
                       "(bert/llm: probability in [0, 1], calibrated=true with a fitted temperature, see --calibration; null for rule)")
    label.add_argument("--calibration", type=Path, help="the labeler's fitted temperature for --format jsonl confidences (models/<labeler>.calibration.json "
                       "of the calibrate rule; default: <model folder>.calibration.json if it exists, else uncalibrated T = 1)")
    label.add_argument("--max-new-tokens", type=int, help="llm: tokens an answer may take (default: the model's own, "
                       "llm.inference.max_new_tokens recorded in its cxrlabel_llm.json; "
                       "an evidence-format report model needs 256-400)")
    label.add_argument("--no-finding-model", help="bert, llm: the learned No Finding model their pipeline trained (models/no_finding, with "
                       "expert.no_finding: learned); default: none, No Finding as the labeler gives it")
    review = commands.add_parser("review", help="serve the page on which radiologists judge pairs of label outputs")
    review.add_argument("--pairs", type=Path, required=True, help="the review set (review/pairs.csv of the review_set rule)")
    review.add_argument("--judgements", type=Path, required=True, help="CSV the judgements are appended to (rlhf.human_judgements)")
    review.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    review.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.command == "review":
            from cxrlabel.review.app import serve

            serve(args.pairs, args.judgements, args.host, args.port)
            return 0
        if args.max_new_tokens is not None and (args.labeler != "llm" or args.max_new_tokens < 1):
            raise ValueError(f"--max-new-tokens {args.max_new_tokens}: a positive number, for --labeler llm only")
        if args.no_finding_model and args.labeler == "rule":
            raise ValueError("--no-finding-model: for the trained labelers (bert, llm) only")
        text_columns = args.text_columns.split(",") if args.text_columns else None
        batch_size = args.batch_size or DEFAULT_BATCH_SIZES[args.labeler]
        count = label_csv(args.input, args.output, args.labeler, args.model, text_columns, batch_size, args.format,
                          args.calibration, args.max_new_tokens, args.no_finding_model)
    except (BadInputError, ValueError, OSError, pa.ArrowInvalid) as error:  # OSError: a missing file, a port in use
        print(f"cxrlabel: error: {error}", file=sys.stderr)
        return 2
    logging.info("labeled %d reports -> %s", count, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
