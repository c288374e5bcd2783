"""`cxrlabel label`: any CSV of reports in, CheXpert format out, ids untouched, in input order."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from cxrlabel.cli import main
from cxrlabel.observations import OBSERVATIONS


def read(path):
    return pl.read_csv(path, infer_schema=False)


def test_report_column_with_ids_passing_through(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text('id,site,report\n007,a,"No pneumothorax. Small left pleural effusion."\n3,b,Heart size is normal.\n2,c,\n')
    assert main(["label", "--labeler", "rule", "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 0
    out = read(tmp_path / "out.csv")
    assert out.columns == ["id", "site", "report", *OBSERVATIONS]
    assert out["id"].to_list() == ["007", "3", "2"]  # leading zeros and order kept
    first = out.row(0, named=True)
    assert first["Pleural Effusion"] == "1.0" and first["Pneumothorax"] == "0.0" and first["Edema"] is None
    assert out.row(1, named=True)["Cardiomegaly"] == "0.0" and out.row(1, named=True)["No Finding"] == "1.0"
    assert out.row(2, named=True)["No Finding"] == "1.0"  # an empty report mentions no finding


def test_findings_and_impression_columns_are_joined(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("uid,findings,impression\n1,Possible pneumonia.,No pneumothorax.\n2,,Cardiomegaly.\n")
    assert main(["label", "--labeler", "rule", "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 0
    out = read(tmp_path / "out.csv")
    assert out["Pneumonia"].to_list() == ["-1.0", None] and out["Pneumothorax"].to_list() == ["0.0", None]
    assert out["Cardiomegaly"].to_list() == [None, "1.0"]
    assert main(["label", "--labeler", "rule", "--input", str(source), "--output", str(tmp_path / "o2.csv"), "--text-columns", "impression"]) == 0
    assert read(tmp_path / "o2.csv")["Pneumonia"].to_list() == [None, None]


def test_missing_text_column_is_a_clear_error(tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text("id,notes\n1,x\n")
    assert main(["label", "--labeler", "rule", "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 2
    assert "in.csv: line 1 (header): no text column" in capsys.readouterr().err


def test_installed_command_runs(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("report\nNo edema.\n")
    done = subprocess.run(["cxrlabel", "label", "--labeler", "rule", "--input", str(source), "--output", str(tmp_path / "out.csv")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert read(tmp_path / "out.csv")["Edema"].to_list() == ["0.0"]


@pytest.mark.parametrize("labeler", ["bert", "llm"])
def test_model_labelers_need_their_folder(tmp_path, labeler, capsys):
    source = tmp_path / "in.csv"
    source.write_text("report\nNo edema.\n")
    assert main(["label", "--labeler", labeler, "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 2
    assert f"the {labeler} labeler needs --model" in capsys.readouterr().err
    assert main(["label", "--labeler", labeler, "--model", str(tmp_path), "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 2
    assert "not a cxrlabel" in capsys.readouterr().err


def test_rule_logs_keep_what_libraries_print(tmp_path):
    from cxrlabel.runlog import logged

    with logged(tmp_path / "rule.log") as log:
        log.info("labeled 3 reports")
        print({"loss": 0.25})  # how trainers report their metrics
        assert sys.stdout.isatty() in (True, False) and sys.stdout.encoding  # libraries ask the stream
    text = (tmp_path / "rule.log").read_text()
    assert "labeled 3 reports" in text and "{'loss': 0.25}" in text


def test_rule_labeling_imports_no_model_or_table_library(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("report\nNo edema.\n")
    code = (
        "import sys; from cxrlabel.cli import main; "
        f"assert main(['label', '--labeler', 'rule', '--input', {str(source)!r}, '--output', {str(tmp_path / 'out.csv')!r}]) == 0; "
        "print(sorted(m for m in ('torch', 'transformers', 'polars', 'datasets') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # start-up is most of a short run's time
