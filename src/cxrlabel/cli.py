"""Command line: ``cxrlabel label`` labels any CSV of reports in CheXpert format (or JSON lines with
each label's evidence and confidence); ``cxrlabel review`` serves the page on which radiologists judge pairs of
label outputs."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from cxrlabel.io.records import BadInputError
from cxrlabel.io.report_csv import OnBadRow, ReportRows, is_standard_stream, written_whole
from cxrlabel.labelers import Labeled, label_batch, make_labeler, supports_evidence
from cxrlabel.observations import CSV_SPELLING, OBSERVATIONS

#: Reports per labeling batch by default. The rule labeler gains ~5% from 64 to 1,024 (the per-batch
#: cost of building the output columns); the LLM labeler ~3x from 32 to 1,024 (it labels a batch's
#: distinct sentences once, in length-sorted model batches); docs/benchmarks.md.
DEFAULT_BATCH_SIZES = {"rule": 1024, "bert": 64, "llm": 1024}

log = logging.getLogger(__name__)


def report_texts(rows: list[list[str]], text_positions: list[int]) -> list[str]:
    """The text a labeler reads: the given columns joined with a space."""
    return [" ".join(row[i] for i in text_positions) for row in rows]


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

    try:
        fitted = Calibration.load(calibration)
    except (ValueError, TypeError) as error:  # not JSON, or not the calibrate rule's keys
        raise BadInputError(f"{calibration}: not a calibration file of the calibrate rule ({type(error).__name__}: {error})") from None
    if not math.isfinite(fitted.temperature) or fitted.temperature <= 0:
        raise BadInputError(f"{calibration}: temperature {fitted.temperature}: a temperature must be positive and finite")
    if (fitted.labeler == "bert") != (labeler_kind == "bert"):
        raise BadInputError(f"{calibration}: fitted for the {fitted.labeler} labeler, not for a {labeler_kind} model")
    log.info("confidences at temperature %.3f (%s: fitted on %d validate labels against their %s labels)", fitted.temperature, calibration, fitted.n_labels, fitted.fitted_on)
    return fitted.temperature


def load_labeler(kind: str, model: str | None, **options):
    """The labeler, or a clear error naming what is wrong with its model folder (never a traceback)."""
    try:
        return make_labeler(kind, model, **options)
    except (ValueError, FileNotFoundError):  # the labelers' own ("not a cxrlabel ..."), already clear
        raise
    except Exception as error:  # a corrupt or foreign folder: whatever its library raised
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise BadInputError(f"--model {model}: cannot be loaded as a {kind} labeler ({type(error).__name__}: {first_line})") from None


def refuse_overwriting_inputs(input_path: Path, *outputs: Path | None) -> None:
    """An output is never the input (a file labeled onto itself is destroyed as it is read)."""
    if is_standard_stream(input_path):
        return
    for output in outputs:
        if output is None or is_standard_stream(output):
            continue
        if output.resolve() == input_path.resolve() or (output.exists() and input_path.exists() and output.samefile(input_path)):
            raise BadInputError(f"{output}: is the input file: write the labels to another path")


def label_csv(input_path: Path, output_path: Path, labeler_kind: str, model: str | None, text_columns: list[str] | None,
              batch_size: int, output_format: str = "csv", calibration: Path | None = None,
              max_new_tokens: int | None = None, no_finding: str | None = None,
              on_bad_row: OnBadRow = "error", skipped_path: Path | None = None, expert_stage: str | None = None) -> int:
    """Stream ``input_path`` through a labeler into ``output_path``; return the report count.

    ``csv`` (CheXpert format): every input column passes through unchanged (read as text), in
    input order, followed by the 14 observation columns (1.0 / 0.0 / -1.0 / blank).
    ``jsonl``: one JSON object per report, in input order: the input's columns other than the
    text columns (ids, as text), then :func:`json_record`'s ``labels``, ``evidence``,
    ``confidence`` and ``calibrated`` (the temperature: :func:`calibration_temperature`).
    Evidence offsets index the text the labeler read: the text columns joined with one space. An
    LLM quote the report does not hold (its label's evidence is null) is counted
    (:attr:`Labeled.evidence_miss`), and the total logged at the end with the number of labels
    that got a span; so are the reports longer than the labeler reads (:attr:`Labeled.truncated`).
    Memory is bounded by the batch size either way. ``max_new_tokens``: an LLM's
    answer room (default: the model's recorded one); ``no_finding``: an LLM's learned No Finding
    model (:mod:`cxrlabel.labelers.no_finding`, the pipeline's ``models/no_finding``);
    ``expert_stage``: a trained labeler's expert stage (:mod:`cxrlabel.labelers.expert_stage`,
    the pipeline's ``models/expert_stage``).

    The input is read by :class:`~cxrlabel.io.report_csv.ReportRows` (``-``: standard input); a
    bad row stops the run with its line, or with ``on_bad_row="skip"`` is left out and listed
    (line, reason) in ``skipped_path`` (default ``<output>.skipped.csv``). The output appears at
    ``output_path`` only when every row was read (:func:`~cxrlabel.io.report_csv.written_whole`).
    """
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size}: at least 1")
    if output_format not in ("csv", "jsonl"):
        raise ValueError(f"unknown output format {output_format!r}: csv or jsonl")
    if on_bad_row == "skip" and skipped_path is None:
        if is_standard_stream(output_path):
            raise ValueError("--on-bad-row skip with --output -: name the skipped rows' file with --skipped-rows")
        skipped_path = Path(f"{output_path}.skipped.csv")
    refuse_overwriting_inputs(input_path, output_path, skipped_path)
    with ReportRows(input_path, on_bad_row) as rows:
        names = rows.names
        if text_columns is None:
            text_columns = ["report"] if "report" in names else [c for c in ("findings", "impression") if c in names]
        missing = [c for c in text_columns if c not in names]
        if not text_columns or missing:
            raise BadInputError(f"{rows.name}: line 1 (header): no text column {missing or ''} among {names}: expected 'report' or 'findings'/'impression' (or pass --text-columns)")
        kept = [c for c in names if c not in text_columns] if output_format == "jsonl" else names
        clash = [c for c in kept if c in (JSONL_KEYS if output_format == "jsonl" else OBSERVATIONS)]
        if clash:
            raise BadInputError(f"{rows.name}: line 1 (header): column(s) {clash} would be overwritten by the labels")
        text_positions = [names.index(c) for c in text_columns]
        options = {key: value for key, value in (("max_new_tokens", max_new_tokens), ("no_finding", no_finding), ("expert_stage", expert_stage)) if value is not None}
        labeler = load_labeler(labeler_kind, model, **options)
        temperature = calibration_temperature(labeler_kind, model, calibration) if output_format == "jsonl" else None
        count = truncated = stated = spans = misses = 0
        progress = tqdm(desc=f"labeling ({labeler_kind})", unit="report", mininterval=2)
        with written_whole(output_path) as out, progress:
            if output_format == "jsonl":
                ids = [(i, name) for i, name in enumerate(names) if name not in text_columns]
                for batch in rows.batches(batch_size):
                    labeled = label_batch(labeler, report_texts(batch, text_positions), evidence=True)
                    lines = (json.dumps(json_record({name: row[i] for i, name in ids}, item, temperature), ensure_ascii=False) + "\n" for row, item in zip(batch, labeled))
                    out.write("".join(lines).encode("utf-8"))
                    count, truncated = count + len(batch), truncated + sum(item.truncated for item in labeled)
                    progress.update(len(batch))
                    for item in labeled:
                        stated += sum(code is not None for code in item.labels.values())
                        spans += sum(e is not None for e in (item.evidence or {}).values())
                        misses += item.evidence_miss
            else:
                schema = pa.schema([(name, pa.string()) for name in (*names, *OBSERVATIONS)])
                with pacsv.CSVWriter(out, schema, write_options=pacsv.WriteOptions(quoting_style="needed")) as writer:
                    for batch in rows.batches(batch_size):
                        labeled = labeler.label_batch(report_texts(batch, text_positions))
                        inputs = [pa.array(column, pa.string()) for column in zip(*batch)]
                        writer.write_batch(pa.RecordBatch.from_arrays([*inputs, *label_columns(labeled)], schema=schema))
                        count, truncated = count + len(batch), truncated + sum(item.truncated for item in labeled)
                        progress.update(len(batch))
            if skipped_path is not None:
                listing = io.StringIO()
                csv.writer(listing, lineterminator="\n").writerows([("line", "reason"), *((row.line, row.reason) for row in rows.skipped)])
                with written_whole(skipped_path) as side:
                    side.write(listing.getvalue().encode("utf-8"))
                log.info("%d bad rows left out (their lines and reasons: %s)", len(rows.skipped), skipped_path)
    if truncated:
        log.info("%d of %d reports were longer than the %s labeler reads and were cut (%s)", truncated, count, labeler_kind,
                 "the tail past its max_length tokens" if labeler_kind == "bert" else "the beginning, keeping the impression")
    if output_format == "jsonl" and supports_evidence(labeler):
        log.info("evidence: %d of %d non-blank labels have a span; %d quotes were not found in their report (evidence null)", spans, stated, misses)
    return count


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: at least 1")
    return value


def port_number(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value}: a TCP port is 1-65535")
    return value


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that the partial output is removed on the way out."""


def raise_terminated(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cxrlabel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    label = commands.add_parser("label", help="label a CSV of reports, writing CheXpert format (or JSON lines with evidence and confidence)")
    label.add_argument("--labeler", choices=list(DEFAULT_BATCH_SIZES), required=True)
    label.add_argument("--model", help="model folder of a trained labeler (bert, llm)")
    label.add_argument("--text-columns", help="comma-separated columns joined into the report text (default: report, else findings,impression)")
    label.add_argument("--input", type=Path, required=True, help="CSV with a 'report' column or 'findings'/'impression' columns (- : standard input); "
                       "quoted fields may hold line breaks; UTF-8, with or without a byte-order mark")
    label.add_argument("--output", type=Path, required=True, help="written only when every row was labeled (- : standard output)")
    label.add_argument("--on-bad-row", choices=["error", "skip"], default="error",
                       help="a row with the wrong field count, bytes that are not UTF-8 or broken quoting: stop with its line "
                       "(error, the default) or leave it out and list its line and reason in --skipped-rows (skip)")
    label.add_argument("--skipped-rows", type=Path, help="with --on-bad-row skip: where the skipped rows are listed (default: <output>.skipped.csv)")
    label.add_argument("--batch-size", type=positive_int, help="reports per batch (default: rule and llm 1024, bert 64)")
    label.add_argument("--format", choices=["csv", "jsonl"], default="csv",
                       help="csv (default): the input's columns + the 14 in CheXpert format; jsonl: one object per report with "
                       "the input's non-text columns, labels, each label's evidence (rule labeler, and an llm tuned to the "
                       "evidence completion format; null for bert and other llm models) and confidence "
                       "(bert/llm: probability in [0, 1], calibrated=true with a fitted temperature, see --calibration; null for rule)")
    label.add_argument("--calibration", type=Path, help="the labeler's fitted temperature for --format jsonl confidences (models/<labeler>.calibration.json "
                       "of the calibrate rule; default: <model folder>.calibration.json if it exists, else uncalibrated T = 1)")
    label.add_argument("--max-new-tokens", type=positive_int, help="llm: tokens an answer may take (default: the model's own, "
                       "llm.inference.max_new_tokens recorded in its cxrlabel_llm.json; "
                       "an evidence-format report model needs 256-400)")
    label.add_argument("--no-finding-model", help="bert, llm: the learned No Finding model their pipeline trained (models/no_finding, with "
                       "expert.no_finding: learned); default: none, No Finding as the labeler gives it")
    label.add_argument("--expert-stage", help="bert, llm: the expert stage their pipeline trained (models/expert_stage, with "
                       "expert.stage: learned), applied after the No Finding model; default: none")
    review = commands.add_parser("review", help="serve the page on which radiologists judge pairs of label outputs")
    review.add_argument("--pairs", type=Path, required=True, help="the review set (review/pairs.csv of the review_set rule)")
    review.add_argument("--judgements", type=Path, required=True, help="CSV the judgements are appended to (rlhf.human_judgements)")
    review.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; another needs --allow-remote)")
    review.add_argument("--port", type=port_number, default=8000, help="TCP port, 1-65535 (default 8000)")
    review.add_argument("--allow-remote", action="store_true", help="allow a --host beyond this machine: every request then needs the access "
                        "token in the link printed at start")
    review.add_argument("--server-name", action="append", default=[], help="a host name annotators open the page by (the Host header; "
                        "default: the --host address, and localhost on this machine); repeatable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.command == "review":
            from cxrlabel.review.app import serve

            serve(args.pairs, args.judgements, args.host, args.port, args.allow_remote, args.server_name)
            return 0
        if args.max_new_tokens is not None and args.labeler != "llm":
            raise ValueError("--max-new-tokens: for --labeler llm only")
        for option, value in (("--no-finding-model", args.no_finding_model), ("--expert-stage", args.expert_stage)):
            if value and args.labeler == "rule":
                raise ValueError(f"{option}: for the trained labelers (bert, llm) only")
        if args.calibration is not None and (args.format != "jsonl" or args.labeler == "rule"):
            raise ValueError("--calibration: for --format jsonl with a trained labeler (bert, llm) only: it sets the confidences")
        if args.skipped_rows is not None and args.on_bad_row != "skip":
            raise ValueError("--skipped-rows: with --on-bad-row skip only")
        text_columns = args.text_columns.split(",") if args.text_columns else None
        batch_size = args.batch_size or DEFAULT_BATCH_SIZES[args.labeler]
        signal.signal(signal.SIGTERM, raise_terminated)
        count = label_csv(args.input, args.output, args.labeler, args.model, text_columns, batch_size, args.format,
                          args.calibration, args.max_new_tokens, args.no_finding_model, args.on_bad_row, args.skipped_rows,
                          expert_stage=args.expert_stage)
    except (BadInputError, ValueError, OSError, pa.ArrowInvalid) as error:  # OSError: a missing file, a port in use, a full disk
        print(f"cxrlabel: error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as stop:
        signum = signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM
        print(f"cxrlabel: stopped by {signum.name}: nothing written to {args.output}", file=sys.stderr)
        return 128 + signum
    logging.info("labeled %d reports -> %s", count, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
