"""`cxrlabel label` on CSVs as report exports really are: quoted reports with line breaks, reports
of megabytes, bad rows named by their line (never by their text), options checked before any work,
and never a partial file at --output (an error, SIGTERM, SIGINT). The large files cross the 1 MiB
blocks in which the former (pyarrow) reader failed; the reader now has no blocks, but the cases
stand: a failure after the first megabyte."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from cxrlabel.cli import main
from cxrlabel.observations import OBSERVATIONS

#: a word that must never reach an error message: it stands for the patient data in a report
SECRET = "Zebulon"
REPORTS = ["No pneumothorax.\nSmall left pleural effusion.", "Heart size is normal.\r\n\r\nNo edema.", 'Possible "pneumonia",\nright base.']


def write_reports(path: Path, rows: int, bad: dict[int, bytes] | None = None, bom: bool = False) -> Path:
    """A CSV (id, report) of ``rows`` quoted multi-line reports; ``bad`` puts raw bytes in place of
    the data row numbered by its 0-based index. Each good row spans 2 or 3 lines."""
    bad = bad or {}
    with open(path, "wb") as out:
        out.write(("\ufeff" if bom else "").encode() + b"id,report\n")
        for i in range(rows):
            text = REPORTS[i % len(REPORTS)].replace('"', '""')
            out.write(bad.get(i, f'{i},"{text}"\n'.encode()))
    return path


def line_of(path: Path, raw: bytes) -> int:
    """The file line (1-based, the header is line 1) on which the row ``raw`` starts."""
    data = path.read_bytes()
    return data[: data.index(raw)].count(b"\n") + 1


def label(*args: str) -> int:
    return main(["label", "--labeler", "rule", *args])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> Path:
    """40,000 multi-line reports, 1.9 MB, with a byte-order mark."""
    return write_reports(tmp_path_factory.mktemp("big") / "reports.csv", 40_000, bom=True)


def test_quoted_reports_with_line_breaks_are_read_whole_in_order(big_csv, tmp_path):
    assert big_csv.stat().st_size > 1 << 20
    assert label("--input", str(big_csv), "--output", str(tmp_path / "out.csv")) == 0
    out = pl.read_csv(tmp_path / "out.csv", infer_schema=False)
    assert out.columns == ["id", "report", *OBSERVATIONS]  # the BOM is not part of the first name
    assert out.height == 40_000 and out["id"].to_list() == [str(i) for i in range(40_000)]
    assert out["report"][:3].to_list() == REPORTS
    assert out["Pleural Effusion"][0] == "1.0" and out["Edema"][1] == "0.0" and out["Pneumonia"][2] == "-1.0"
    assert out.row(39_999)[1:] == out.row(39_999 % 3)[1:]  # the last row is whole: the same report, labeled alike


def test_a_report_of_megabytes_is_one_row(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text('id,report\n1,"' + "There is a small left pleural effusion. " * 130_000 + '"\n2,No edema.\n')
    assert source.stat().st_size > 5_000_000
    assert label("--input", str(source), "--output", str(tmp_path / "out.csv")) == 0
    out = pl.read_csv(tmp_path / "out.csv", infer_schema=False)
    assert out["id"].to_list() == ["1", "2"] and out["Pleural Effusion"].to_list() == ["1.0", None]


BAD_ROWS = {
    "latin-1 bytes": (f'30000,"{SECRET} caf\xe9 effusion."\n'.encode("latin-1"), "column 'report' is not valid UTF-8"),
    "a ragged row": (f"30000,{SECRET},effusion,more\n".encode(), "4 fields where the header has 2"),
    "text after a closing quote": (f'30000,"{SECRET}" effusion\n'.encode(), "broken quoting"),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_a_bad_row_is_named_by_file_and_line_without_its_text_and_leaves_no_output(case, tmp_path, capsys):
    raw, problem = BAD_ROWS[case]
    source = write_reports(tmp_path / "in.csv", 40_000, {30_000: raw})
    output = tmp_path / "out.csv"
    output.write_text("an earlier run's labels\n")
    assert label("--input", str(source), "--output", str(output)) == 2
    error = capsys.readouterr().err
    assert f"in.csv: line {line_of(source, raw)}: {problem}" in error, error
    assert SECRET not in error and "Traceback" not in error
    assert output.read_text() == "an earlier run's labels\n" and leftovers(tmp_path) == []


def test_skip_leaves_bad_rows_out_and_lists_their_lines_and_reasons(tmp_path, caplog):
    bad = {100: BAD_ROWS["latin-1 bytes"][0], 30_000: BAD_ROWS["a ragged row"][0]}
    source = write_reports(tmp_path / "in.csv", 40_000, bad)
    output = tmp_path / "out.csv"
    with caplog.at_level("INFO"):
        assert label("--input", str(source), "--output", str(output), "--on-bad-row", "skip") == 0
    out = pl.read_csv(output, infer_schema=False)
    assert out.height == 40_000 - 2 and "100" not in out["id"].to_list() and "30000" not in out["id"].to_list()
    skipped = pl.read_csv(tmp_path / "out.csv.skipped.csv", infer_schema=False)
    assert skipped["line"].to_list() == [str(line_of(source, bad[100])), str(line_of(source, bad[30_000]))]
    assert skipped["reason"].to_list() == ["column 'report' is not valid UTF-8 (re-encode the file as UTF-8)", "4 fields where the header has 2"]
    assert "2 bad rows left out" in caplog.text and SECRET not in caplog.text + skipped.write_csv()


def test_an_unclosed_quote_is_named_by_the_line_where_its_row_starts(tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text('id,report\n1,"No edema."\n2,"Small effusion.\n3,No pneumothorax.\n')
    assert label("--input", str(source), "--output", str(tmp_path / "out.csv")) == 2
    assert "in.csv: line 3: broken quoting" in capsys.readouterr().err


@pytest.mark.parametrize("header, repeated", [("id,report,report", "['report']"), ("id,id,report", "['id']")])
def test_repeated_column_names_are_refused_with_their_names(header, repeated, tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text(f"{header}\n1,2,No edema.\n")
    assert label("--input", str(source), "--output", str(tmp_path / "out.csv")) == 2
    assert f"in.csv: line 1 (header): column names {repeated} appear more than once" in capsys.readouterr().err


def test_options_are_checked_before_any_work(tmp_path, capsys):
    source = write_reports(tmp_path / "in.csv", 20_000)
    before = source.read_bytes()
    with pytest.raises(SystemExit) as stop:
        label("--input", str(source), "--output", str(tmp_path / "out.csv"), "--batch-size", "-1")
    assert stop.value.code == 2 and "--batch-size: -1: at least 1" in capsys.readouterr().err
    for same in (source, tmp_path / "." / "in.csv"):
        assert label("--input", str(source), "--output", str(same)) == 2
        assert "is the input file" in capsys.readouterr().err
    assert source.read_bytes() == before and not (tmp_path / "out.csv").exists()


def test_standard_input_and_output_stream(big_csv, tmp_path):
    with open(big_csv, "rb") as source:
        done = subprocess.run([sys.executable, "-m", "cxrlabel.cli", "label", "--labeler", "rule", "--input", "-", "--output", "-"],
                              stdin=source, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert label("--input", str(big_csv), "--output", str(tmp_path / "out.csv")) == 0
    assert done.stdout == (tmp_path / "out.csv").read_bytes()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_run_stopped_by_a_signal_leaves_no_output_and_no_traceback(signum, tmp_path):
    source = write_reports(tmp_path / "in.csv", 300_000)
    output = tmp_path / "out.csv"
    run = subprocess.Popen([sys.executable, "-m", "cxrlabel.cli", "label", "--labeler", "rule", "--input", str(source), "--output", str(output)],
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 1 << 20 for p in tmp_path.glob(".out.csv.*")) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the labels written so far pass a megabyte
    run.send_signal(signum)
    error = run.communicate(timeout=60)[1]
    assert run.returncode == 128 + signum and "Traceback" not in error, error
    assert f"stopped by {signal.Signals(signum).name}: nothing written to" in error
    assert not output.exists() and leftovers(tmp_path) == []


@pytest.fixture(scope="module")
def bert_model(tmp_path_factory) -> Path:
    """An untrained BERT labeler on the packaged encoder, reading 64 tokens."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from cxrlabel.labelers.bert import BertLabelerModel, BertSettings, packaged_encoder, save_bert

    torch.manual_seed(0)
    model = tmp_path_factory.mktemp("models") / "bert"
    save_bert(BertLabelerModel(AutoModel.from_pretrained(packaged_encoder())), AutoTokenizer.from_pretrained(packaged_encoder()), str(model), BertSettings(max_length=64))
    return model


def test_reports_longer_than_the_model_reads_are_counted(bert_model, tmp_path, caplog):
    source = tmp_path / "in.csv"
    source.write_text("id,report\n1,No edema.\n2," + "There is a small effusion. " * 40 + "\n")
    with caplog.at_level("INFO"):
        assert main(["label", "--labeler", "bert", "--model", str(bert_model), "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 0
    assert "1 of 2 reports were longer than the bert labeler reads and were cut" in caplog.text


@pytest.mark.parametrize("fitted, problem", [
    ({"labeler": "bert", "temperature": 0.0}, "a temperature must be positive and finite"),
    ({"labeler": "bert", "temperature": -2.0}, "a temperature must be positive and finite"),
    ({"labeler": "bert", "temperature": math.nan}, "a temperature must be positive and finite"),
    ({"labeler": "sft", "temperature": 1.5}, "fitted for the sft labeler, not for a bert model"),
    ({"temperature": 1.5}, "not a calibration file of the calibrate rule"),
])
def test_a_calibration_file_must_be_the_labelers_with_a_positive_temperature(fitted, problem, bert_model, tmp_path, capsys):
    keys = {"labeler": "bert", "fitted_on": "gold", "n_labels": 10, "ece_before": 0.2, "ece_after": 0.1, "n_bins": 15}
    calibration = tmp_path / "c.json"
    calibration.write_text(json.dumps({key: value for key, value in keys.items() if key != "labeler"} | fitted))
    source = tmp_path / "in.csv"
    source.write_text("id,report\n1,No edema.\n")
    args = ["label", "--labeler", "bert", "--model", str(bert_model), "--input", str(source), "--output", str(tmp_path / "out.jsonl"), "--format", "jsonl"]
    assert main([*args, "--calibration", str(calibration)]) == 2
    assert problem in capsys.readouterr().err and not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("labeler", ["bert", "llm"])
def test_a_corrupt_model_folder_is_a_clear_error(labeler, bert_model, tmp_path, capsys):
    import shutil

    from cxrlabel.labelers.llm import SETTINGS_FILE

    folder = tmp_path / "model"
    shutil.copytree(bert_model, folder)
    if labeler == "llm":
        (folder / SETTINGS_FILE).write_text("{}")  # a BERT folder, claimed as an LLM's
    for weights in folder.glob("**/*.safetensors"):
        weights.write_bytes(b"not safetensors")
    source = tmp_path / "in.csv"
    source.write_text("id,report\n1,No edema.\n")
    assert main(["label", "--labeler", labeler, "--model", str(folder), "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 2
    error = capsys.readouterr().err
    assert f"--model {folder}: cannot be loaded as a {labeler} labeler" in error and "Traceback" not in error, error
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("output_format", ["csv", "jsonl"])
def test_a_failure_after_the_first_batches_leaves_no_output(output_format, tmp_path, monkeypatch, capsys):
    """A full disk (the CSV writer failing with ENOSPC at its third batch) and a bad row far into
    the file (JSON lines): no file at --output, and no partial one beside it."""
    import errno

    import pyarrow.csv as pacsv

    bad = {}
    if output_format == "csv":
        class FullDisk(pacsv.CSVWriter):
            batches = 0

            def write_batch(self, batch):
                FullDisk.batches += 1
                if FullDisk.batches == 3:
                    raise OSError(errno.ENOSPC, "No space left on device")
                super().write_batch(batch)

        monkeypatch.setattr(pacsv, "CSVWriter", FullDisk)
    else:
        bad = {30_000: BAD_ROWS["a ragged row"][0]}
    source = write_reports(tmp_path / "in.csv", 40_000, bad)
    output = tmp_path / f"out.{output_format}"
    assert label("--input", str(source), "--output", str(output), "--format", output_format, "--batch-size", "1024") == 2
    assert ("No space left on device" if output_format == "csv" else "4 fields where the header has 2") in capsys.readouterr().err
    assert not output.exists() and leftovers(tmp_path) == []
