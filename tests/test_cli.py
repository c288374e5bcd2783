"""`cxrlabel label`: any CSV of reports in, CheXpert format out, ids untouched, in input order."""

from __future__ import annotations

import os
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


@pytest.mark.parametrize("ci", [None, "true"])
def test_rule_logs_keep_what_libraries_print(tmp_path, ci):
    """A one-process rule job (a fresh interpreter, its stderr the real one): its log gets what
    libraries write to stderr, transformers' logger (its handler made at import, before the block;
    where ``CI`` is set it also propagates to the root), warnings and tqdm bars, as well as log
    records and stdout, each once; the terminal still gets them."""
    code = f"""
import sys, warnings
from tqdm import tqdm
from transformers.utils import logging as hf_logging
from cxrlabel.runlog import logged

with logged({str(tmp_path / "rule.log")!r}) as log:
    log.info("labeled 3 reports")
    print({{"loss": 0.25}})  # how trainers report their metrics
    assert sys.stdout.isatty() in (True, False) and sys.stdout.encoding  # libraries ask the stream
    hf_logging.get_logger("transformers.trainer").warning("transformers speaking")
    warnings.warn("a deprecated option")
    for _ in tqdm(range(3), desc="tokenizing"):
        pass
"""
    environment = {key: value for key, value in os.environ.items() if key != "CI"} | ({"CI": ci} if ci else {})
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=environment)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "rule.log").read_text()
    printed = ["labeled 3 reports", "transformers speaking", "UserWarning: a deprecated option", "tokenizing: 100%|"]
    assert "{'loss': 0.25}" in text and all(line in text for line in printed), text
    assert "{'loss': 0.25}" in done.stdout and all(line in done.stderr for line in printed), done.stderr
    assert text.count("labeled 3 reports") == 1 and text.count("transformers speaking") == 1
    assert done.stderr.count("labeled 3 reports") == 1 and done.stderr.count("transformers speaking") == 1


def heavy_modules_imported(args: list[str]) -> str:
    """Run ``cxrlabel`` with ``args`` in a fresh interpreter; the model and table libraries it imported."""
    code = (
        f"import sys; from cxrlabel.cli import main; assert main({args!r}) == 0; "
        "print(sorted(m for m in ('torch', 'transformers', 'polars', 'datasets') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_rule_labeling_imports_no_model_or_table_library(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("report\nNo edema.\n")
    # start-up is most of a short run's time
    assert heavy_modules_imported(["label", "--labeler", "rule", "--input", str(source), "--output", str(tmp_path / "out.csv")]) == "[]"


def test_jsonl_carries_ids_labels_evidence_and_nulls(tmp_path):
    import json

    source = tmp_path / "in.csv"
    source.write_text('id,site,findings,impression\n007,a,"No pneumothorax.","Possible PNEUMONIA."\n3,b,,Heart size is normal.\n2,c,,\n')
    assert main(["label", "--labeler", "rule", "--input", str(source), "--output", str(tmp_path / "out.jsonl"), "--format", "jsonl", "--batch-size", "2"]) == 0
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [list(r) for r in records] == [["id", "site", "labels", "evidence", "confidence", "calibrated"]] * 3  # text columns left out
    assert [(r["id"], r["site"]) for r in records] == [("007", "a"), ("3", "b"), ("2", "c")]  # as text, in input order
    first = records[0]
    assert list(first["labels"]) == list(OBSERVATIONS)
    assert first["labels"]["Pneumothorax"] == 0 and first["labels"]["Pneumonia"] == -1 and first["labels"]["Edema"] is None
    assert first["labels"]["No Finding"] is None
    text = "No pneumothorax. Possible PNEUMONIA."  # findings and impression joined with a space: what the labeler read
    assert first["evidence"] == {
        "Pneumothorax": {"start": 3, "end": 15, "quote": "pneumothorax", "cue": "No", "cue_start": 0, "cue_end": 2},
        "Pneumonia": {"start": 26, "end": 35, "quote": "PNEUMONIA", "cue": "Possible", "cue_start": 17, "cue_end": 25},
    }
    assert text[26:35] == "PNEUMONIA" and text[17:25] == "Possible"
    assert first["confidence"] == {"Pneumothorax": None, "Pneumonia": None} and first["calibrated"] is False  # the rule labeler has no scores
    second = records[1]
    assert second["labels"]["Cardiomegaly"] == 0 and second["labels"]["No Finding"] == 1
    assert second["evidence"]["No Finding"] is None and second["evidence"]["Cardiomegaly"]["quote"] == "Heart size is normal"
    assert records[2]["evidence"] == {"No Finding": None} and records[2]["confidence"] == {"No Finding": None}


def test_jsonl_labels_equal_the_csv_labels_and_the_csv_is_unchanged_by_evidence(tmp_path):
    """The same reports through --format csv and --format jsonl; the CSV also equals the one written
    from the labels computed with evidence, byte for byte."""
    import json
    import random

    import pyarrow as pa
    import pyarrow.csv as pacsv

    from cxrlabel.cli import label_columns
    from cxrlabel.io.demo import DemoSpec, draw_labels, render_report
    from cxrlabel.labelers.rule import RuleLabeler

    rng, spec = random.Random(11), DemoSpec()
    reports = [render_report(draw_labels(rng, spec), rng, rng.random() < spec.p_long) for _ in range(300)]
    reports += ["No pneumothorax.", "possible pneumonia", "NO EDEMA.\r\nSmall  LEFT\teffusion.", ""]
    table = pa.table({"study_id": [f"s{i:04d}" for i in range(len(reports))], "report": reports})
    pacsv.write_csv(table, tmp_path / "in.csv")
    assert main(["label", "--labeler", "rule", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"), "--batch-size", "64"]) == 0
    assert main(["label", "--labeler", "rule", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.jsonl"), "--format", "jsonl", "--batch-size", "64"]) == 0

    with_evidence = RuleLabeler().label_batch(reports, evidence=True)
    schema = pa.schema([(name, pa.string()) for name in ("study_id", "report", *OBSERVATIONS)])
    expected = pa.RecordBatch.from_arrays([*table.to_batches()[0].columns, *label_columns(with_evidence)], schema=schema)
    pacsv.write_csv(expected, tmp_path / "expected.csv", write_options=pacsv.WriteOptions(quoting_style="needed"))
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "expected.csv").read_bytes()

    csv_rows = read(tmp_path / "out.csv").select("study_id", *OBSERVATIONS).rows()
    spelled = {1: "1.0", 0: "0.0", -1: "-1.0", None: None}
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["study_id"], *(spelled[r["labels"][name]] for name in OBSERVATIONS)) for r in records] == csv_rows
    for record, text in zip(records, reports):
        for name, evidence in record["evidence"].items():
            if evidence is not None:
                assert text[evidence["start"]:evidence["end"]] == evidence["quote"]


def test_jsonl_of_a_labeler_without_evidence_has_null_evidence():
    from cxrlabel.cli import json_record
    from cxrlabel.labelers import Labeled

    labels = dict.fromkeys(OBSERVATIONS) | {"Edema": 1}
    record = json_record({"id": "1"}, Labeled(labels))  # what bert and llm return today
    assert record == {"id": "1", "labels": labels, "evidence": None, "confidence": {"Edema": None}, "calibrated": False}


def test_jsonl_confidence_is_the_softmax_of_the_scores_at_the_temperature():
    import math

    from cxrlabel.cli import json_record
    from cxrlabel.labelers import Labeled

    labels = dict.fromkeys(OBSERVATIONS) | {"Edema": 1, "No Finding": None, "Fracture": 0}
    scored = Labeled(labels, scores={"Edema": {1: 2.0, 0: 0.0, -1: 0.0}})  # an LLM: no score for Fracture here
    record = json_record({"id": "1"}, scored)
    assert record["confidence"] == {"Edema": pytest.approx(math.exp(2) / (math.exp(2) + 2)), "Fracture": None} and record["calibrated"] is False
    record = json_record({"id": "1"}, scored, temperature=2.0)
    assert record["confidence"]["Edema"] == pytest.approx(math.e / (math.e + 2)) and record["calibrated"] is True


def test_jsonl_of_the_bert_labeler_has_calibrated_confidences_from_the_file_beside_its_model(tmp_path, capsys):
    """An (untrained) BERT classifier: every non-blank label has a confidence in [0, 1]; uncalibrated
    without a calibration file, calibrated with models/bert.calibration.json beside its folder or
    --calibration, and the CSV's labels unchanged by any of it."""
    import json

    import torch
    from transformers import AutoModel, AutoTokenizer

    from cxrlabel.evaluation.calibration import Calibration
    from cxrlabel.labelers.bert import BertLabelerModel, BertSettings, packaged_encoder, save_bert

    torch.manual_seed(0)
    model = tmp_path / "models/bert"
    save_bert(BertLabelerModel(AutoModel.from_pretrained(packaged_encoder())), AutoTokenizer.from_pretrained(packaged_encoder()), str(model), BertSettings(max_length=64))
    source = tmp_path / "in.csv"
    source.write_text("id,report\n1,Mild pulmonary edema.\n2,No pneumothorax.\n3,Heart size is normal.\n")

    def run(*extra):
        out = tmp_path / "out.jsonl"
        assert main(["label", "--labeler", "bert", "--model", str(model), "--input", str(source), "--output", str(out), "--format", "jsonl", *extra]) == 0
        return [json.loads(line) for line in out.read_text().splitlines()]

    before = run()
    assert all(r["calibrated"] is False for r in before)
    stated = [(r["id"], name) for r in before for name, code in r["labels"].items() if code is not None]
    assert stated and all(set(r["confidence"]) == {n for n, c in r["labels"].items() if c is not None} for r in before)
    confidences = [r["confidence"][name] for r in before for name in r["confidence"]]
    assert all(0.0 <= p <= 1.0 for p in confidences)
    Calibration("bert", 3.0, "gold", 10, 0.2, 0.05, 15).save(tmp_path / "models/bert.calibration.json")
    beside = run()
    assert all(r["calibrated"] is True for r in beside) and [r["labels"] for r in beside] == [r["labels"] for r in before]
    # a higher temperature pulls every confidence towards uniform: a chosen (argmax) class's confidence falls
    assert all(b["confidence"][n] <= a["confidence"][n] + 1e-12 for a, b in zip(before, beside) for n in a["confidence"])
    Calibration("bert", 1.0, "silver", 10, 0.2, 0.2, 15).save(tmp_path / "t1.json")
    explicit = run("--calibration", str(tmp_path / "t1.json"))
    assert all(r["calibrated"] is True for r in explicit) and [r["confidence"] for r in explicit] == [r["confidence"] for r in before]
    assert main(["label", "--labeler", "bert", "--model", str(model), "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 0
    spelled = {1: "1.0", 0: "0.0", -1: "-1.0", None: None}
    assert read(tmp_path / "out.csv").select(OBSERVATIONS).rows() == [tuple(spelled[r["labels"][n]] for n in OBSERVATIONS) for r in before]


def test_jsonl_refuses_an_id_column_it_would_overwrite(tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text("labels,report\nx,No edema.\n")
    assert main(["label", "--labeler", "rule", "--input", str(source), "--output", str(tmp_path / "out.jsonl"), "--format", "jsonl"]) == 2
    assert "['labels'] would be overwritten" in capsys.readouterr().err


def test_jsonl_rule_labeling_imports_no_model_or_table_library(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,report\n1,No edema.\n")
    out = tmp_path / "out.jsonl"
    assert heavy_modules_imported(["label", "--labeler", "rule", "--format", "jsonl", "--input", str(source), "--output", str(out)]) == "[]"
    assert out.read_text().count("\n") == 1 and '"cue": "No"' in out.read_text()
