from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cxrlabel.ingest import ingest, ingest_mimic, write_corpus
from cxrlabel.io.labels import read_label_csv, read_labels
from cxrlabel.io.mimic import parse_sections, report_text
from cxrlabel.io.records import BadInputError, DropLog
from mimic_fixture import ALPHABETICAL, GOLD_HEADER, REPORTS, STRAY_FILE, write_release


@pytest.fixture(params=["zip", "tree"])
def release(request, tmp_path: Path) -> dict[str, Path]:
    return write_release(tmp_path, as_zip=request.param == "zip")


def run(release: dict[str, Path], strict: bool = False):
    return ingest_mimic(**{k: str(v) for k, v in release.items()}, source="mimic", strict=strict)


def test_every_report_is_kept_or_dropped_with_its_reason(release):
    corpus = run(release)
    kept = set(corpus.reports["study_id"])
    assert kept == {"50000001", "50000002", "50000003", "50000004", "50000005", "50000006", "50000007"}
    dropped = corpus.drops.frame()
    by_study = dropped.group_by("study_id").agg(pl.col("reason").sort()).rows_by_key("study_id", unique=True)
    assert by_study["50000009"] == (["no_report_text"],)
    assert by_study["50000010"] == (["not_utf8"],)
    assert by_study["50000011"] == (["no_split"],)
    # its split rows are dropped for disagreeing, so its report has no split
    assert by_study["50000008"] == (["conflicting_split", "no_split"],)
    assert set(REPORTS) <= kept | set(by_study)
    stray = dropped.filter(pl.col("reason") == "unexpected_path")
    assert stray.height == 1 and stray["source_file"][0].endswith(STRAY_FILE)
    assert corpus.read_counts["report_files"] == len(REPORTS) + 1


def test_dropped_records_name_file_and_row(release):
    dropped = run(release).drops.frame()
    invalid = dropped.filter(pl.col("reason") == "invalid_label").row(0, named=True)
    assert invalid["source_file"].endswith("chexpert.csv.gz") and invalid["record"] == "line 8"
    assert "Pneumothorax" in invalid["detail"] and "2.0" in invalid["detail"]
    duplicate = dropped.filter(pl.col("reason") == "duplicate_study").row(0, named=True)
    assert duplicate["record"] == "line 9" and "line 7" in duplicate["detail"]
    unknown_split = dropped.filter(pl.col("reason") == "invalid_split").row(0, named=True)
    assert unknown_split["record"] == "line 15" and "holdout" in unknown_split["detail"]
    assert dropped.filter(pl.col("reason") == "no_report")["study_id"].to_list() == ["59999999"]


def test_sections_and_text(release):
    reports = {row["study_id"]: row for row in run(release).reports.iter_rows(named=True)}
    standard = reports["50000001"]
    assert standard["findings"] == "There is a small left pleural effusion, new since ___. No pneumothorax. Heart size is normal."
    assert standard["impression"] == "Small left pleural effusion."
    assert standard["text"] == f"{standard['findings']} {standard['impression']}"
    assert reports["50000002"]["text"] == "Interstitial markings are increased. Heart is enlarged. Mild pulmonary edema."
    assert reports["50000003"]["findings"] is None and reports["50000003"]["text"] == "Right IJ catheter tip in the SVC."
    assert reports["50000004"]["impression"] is None
    neither = reports["50000005"]
    assert neither["text_source"] == "last_section"
    assert neither["text"] == "Portable AP view of the chest. Low lung volumes. No pneumothorax. Bibasilar atelectasis."
    assert reports["50000006"]["text"] == "No focal consolidation. No pneumonia."  # the wet read is not the report
    assert "\r" not in reports["50000007"]["text"] and "moderate right pleural effusion" in reports["50000007"]["text"]
    assert "new since ___." in standard["findings"]  # de-identification kept as is
    assert {row["split"] for row in reports.values()} == {"train", "validate", "test"}
    assert all(row["n_tokens"] > 0 and row["source"] == "mimic" for row in reports.values())


def test_addendum_follows_the_impression():
    sections = parse_sections(" FINDINGS:  ETT in place.\n\n IMPRESSION:  Fine.\n\n ADDENDUM:  Discussed with Dr. ___.\n")
    assert report_text(sections) == ("ETT in place. Fine. Discussed with Dr. ___.", "sections")


def test_labels_read_as_codes_with_blank_as_null(release):
    corpus = run(release)
    silver = {row["study_id"]: row for row in corpus.silver.iter_rows(named=True)}
    assert silver["50000001"]["Pleural Effusion"] == 1 and silver["50000001"]["Pneumothorax"] == 0
    assert silver["50000001"]["Edema"] is None
    assert silver["50000006"]["Pneumonia"] == -1
    gold = {row["study_id"]: row for row in corpus.gold.iter_rows(named=True)}
    assert gold["50000005"]["Lung Opacity"] == -1  # spelled "Airspace Opacity" in the file
    assert gold["50000004"]["No Finding"] == 1 and gold["50000004"]["Consolidation"] == 0
    assert corpus.gold_kind == "full"


def test_strict_mode_stops_at_the_first_bad_record(release):
    with pytest.raises(BadInputError, match=r"p10000005/s50000009\.txt: file: no findings, impression or other result section"):
        run(release, strict=True)


def test_unknown_column_is_a_clear_error(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(GOLD_HEADER + ",Hernia\n50000001" + "," * (len(ALPHABETICAL) + 1) + "\n")
    with pytest.raises(BadInputError, match=r"labels\.csv: line 1 \(header\): unknown column\(s\) \['Hernia'\]"):
        read_label_csv(path, DropLog())


def test_missing_column_is_a_clear_error(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("study_id,Edema\n1,1.0\n")
    with pytest.raises(BadInputError, match=r"missing column\(s\) \['No Finding'"):
        read_label_csv(path, DropLog())


def test_written_tables_and_summary(release, tmp_path):
    corpus = run(release)
    out = {name: str(tmp_path / f"{name}.out") for name in ("reports", "silver", "gold", "dropped", "summary")}
    summary = write_corpus(corpus, out)
    assert json.loads(Path(out["summary"]).read_text()) == summary
    assert summary["kept"]["reports"] == 7 and sum(summary["dropped"].values()) == corpus.drops.frame().height
    gold, kind = read_labels(out["gold"])
    assert kind == "full" and gold.schema["Edema"] == pl.Int8
    assert pl.read_parquet(out["dropped"]).height == len(corpus.drops.rows)


OPENI_HEADER = "uid,indication,comparison,findings,impression,mesh," + ",".join(ALPHABETICAL)


def openi_row(uid: str, findings: str, impression: str, mesh: str, **values: str) -> str:
    cells = [uid, "Cough.", "None.", f'"{findings}"', f'"{impression}"', mesh]
    return ",".join(cells + [values.get(name.replace(" ", "_"), "") for name in ALPHABETICAL])


def test_openi_indexer_labels_are_positive_only(tmp_path):
    path = tmp_path / "openi.csv"
    path.write_text(
        "\n".join(
            [
                OPENI_HEADER,
                openi_row("1", "Heart is enlarged.", "Cardiomegaly.", "Cardiomegaly/mild", Cardiomegaly="1.0"),
                openi_row("2", "", "No acute disease.", "normal", No_Finding="1.0"),
                openi_row("3", "", "", "normal", No_Finding="1.0"),  # dropped: no text
                openi_row("4", "Lungs clear.", "Normal.", "normal", No_Finding="0.0"),  # dropped: not positive-only
                openi_row("2", "Again.", "", "normal"),  # dropped: duplicate uid
            ]
        )
        + "\n"
    )
    config = {"format": "openi", "strict": False, "name": "openi", "openi": {"split_fractions": {"train": 0.7, "validate": 0.1, "test": 0.2}, "seed": 1}}
    corpus = ingest(config, {"csv": str(path)})
    assert corpus.reports["study_id"].to_list() == ["1", "2"]
    assert corpus.reports.filter(pl.col("study_id") == "2")["text"][0] == "No acute disease."
    assert corpus.gold_kind == "positive_only" and corpus.silver.height == 0
    assert corpus.gold.filter(pl.col("study_id") == "1")["Cardiomegaly"][0] == 1
    assert corpus.gold.filter(pl.col("study_id") == "1")["Edema"][0] is None
    assert dict(zip(corpus.drops.frame()["record"], corpus.drops.frame()["reason"])) == {
        "line 4": "no_report_text", "line 5": "invalid_label", "line 6": "duplicate_study",
    }


def test_real_openi_dev_file_ingests_completely(openi_csv):
    config = {"format": "openi", "strict": True, "name": "openi", "openi": {"split_fractions": {"train": 0.7, "validate": 0.1, "test": 0.2}, "seed": 13}}
    corpus = ingest(config, {"csv": str(openi_csv)})
    assert corpus.reports.height == 2208 and corpus.gold.height == 2208
    shares = corpus.reports.group_by("split").len().sort("split")
    assert dict(shares.iter_rows())["train"] / 2208 == pytest.approx(0.7, abs=0.03)
