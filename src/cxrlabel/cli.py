"""Command line: ``cxrlabel label`` labels any CSV of reports in CheXpert format."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from cxrlabel.io.labels import to_chexpert_csv_frame
from cxrlabel.io.records import BadInputError
from cxrlabel.labelers import make_labeler
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.predict import FLAGS, labeled_frame

LABELERS = ("rule", "bert", "llm")


def report_texts(batch: pl.DataFrame, text_columns: list[str]) -> list[str]:
    """The text a labeler reads: the given columns joined with a space, nulls skipped."""
    joined = pl.concat_str([pl.col(c) for c in text_columns], separator=" ", ignore_nulls=True).fill_null("")
    return batch.select(joined).to_series().to_list()


def label_csv(input_path: Path, output_path: Path, labeler_kind: str, model: str | None, text_columns: list[str] | None, batch_size: int) -> int:
    """Stream ``input_path`` through a labeler into a CheXpert-format ``output_path``; return the report count.

    Every input column passes through unchanged (read as text), in input order, followed by
    the 14 observation columns (1.0 / 0.0 / -1.0 / blank). Memory is bounded by the batch size.
    """
    names = pacsv.open_csv(input_path).schema.names
    if text_columns is None:
        text_columns = ["report"] if "report" in names else [c for c in ("findings", "impression") if c in names]
    missing = [c for c in text_columns if c not in names]
    if not text_columns or missing:
        raise BadInputError(f"{input_path}: line 1 (header): no text column {missing or ''} among {names}: expected 'report' or 'findings'/'impression' (or pass --text-columns)")
    clash = [c for c in names if c in OBSERVATIONS]
    if clash:
        raise BadInputError(f"{input_path}: line 1 (header): column(s) {clash} would be overwritten by the labels")

    labeler = make_labeler(labeler_kind, model)
    reader = pacsv.open_csv(
        input_path,
        read_options=pacsv.ReadOptions(block_size=1 << 20),
        convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in names}, strings_can_be_null=False),
    )
    count = 0
    schema = pa.schema([(name, pa.string()) for name in (*names, *OBSERVATIONS)])
    options = pacsv.WriteOptions(quoting_style="needed")
    with pacsv.CSVWriter(output_path, schema, write_options=options) as writer, tqdm(desc=f"labeling ({labeler_kind})", unit="report", mininterval=2) as progress:
        for record_batch in reader:
            frame = pl.from_arrow(record_batch)
            for start in range(0, frame.height, batch_size):
                chunk = frame.slice(start, batch_size)
                labels = labeled_frame(labeler.label_batch(report_texts(chunk, text_columns)))
                out = to_chexpert_csv_frame(pl.concat([chunk, labels.drop(FLAGS)], how="horizontal"))
                writer.write_table(out.to_arrow().cast(schema))
                count += chunk.height
                progress.update(chunk.height)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cxrlabel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    label = commands.add_parser("label", help="label a CSV of reports, writing CheXpert format")
    label.add_argument("--labeler", choices=LABELERS, required=True)
    label.add_argument("--model", help="model folder of a trained labeler (bert, llm)")
    label.add_argument("--input", type=Path, required=True, help="CSV with a 'report' column or 'findings'/'impression' columns")
    label.add_argument("--output", type=Path, required=True)
    label.add_argument("--text-columns", help="comma-separated columns joined into the report text (default: report, else findings,impression)")
    label.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        count = label_csv(args.input, args.output, args.labeler, args.model, args.text_columns.split(",") if args.text_columns else None, args.batch_size)
    except (BadInputError, ValueError, FileNotFoundError, pa.ArrowInvalid) as error:
        print(f"cxrlabel: error: {error}", file=sys.stderr)
        return 2
    logging.info("labeled %d reports -> %s", count, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
