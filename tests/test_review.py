"""The expert review: blinded pairs, the pairs file's checks, the review app's pages and
submissions, and judgements that the preferences rule reads (the browser test: test_workflow)."""

from __future__ import annotations

import csv
import http.client
import os
import resource
import signal
import subprocess
import threading
from types import SimpleNamespace

import polars as pl
import pytest
from review_browser import ReviewServer, free_port

from cxrlabel.cli import main
from cxrlabel.instruct import PromptSettings
from cxrlabel.io.records import BadInputError, DropLog
from cxrlabel.review.app import create_app
from cxrlabel.review.pairs import JUDGEMENT_COLUMNS, PAIR_COLUMNS, blinded_pairs, read_pairs
from cxrlabel.training.preferences import collect_preferences, read_human_judgements

MALICIOUS = "<script>document.title='pwned'</script><img src=x onerror=alert(1)> Small <b>left</b> effusion."
OUTPUTS = ['{"Pleural Effusion": "positive"}', '{"Pleural Effusion": "uncertain"}', '{"Pleural Effusion": "negative"}', '{"Pneumothorax": "positive"}']


def write_pairs(path, n_reports: int = 3) -> pl.DataFrame:
    ids = [f"s{i}" for i in range(n_reports)]
    texts = [MALICIOUS, *[f"Report {i}. No pneumothorax." for i in range(1, n_reports)]]
    pairs = blinded_pairs(ids, texts, [OUTPUTS] * n_reports, max_pairs=2, seed=0)
    pairs.write_csv(path)
    return pairs


def test_blinded_pairs_are_distinct_shuffled_and_say_nothing_of_their_source():
    candidates = [[*OUTPUTS, OUTPUTS[0], " " + OUTPUTS[1]] for _ in range(40)]  # repeats: one candidate
    pairs = blinded_pairs([f"s{i}" for i in range(40)], [f"text {i}" for i in range(40)], candidates, max_pairs=6, seed=1)
    assert pairs.columns == list(PAIR_COLUMNS) and pairs.height == 40 * 6  # 4 distinct candidates: 6 pairs each
    assert pairs["pair_id"].to_list() == [f"p{i:05d}" for i in range(1, 241)]
    assert (pairs["output_a"] != pairs["output_b"]).all()
    assert pairs.select("study_id", "output_a", "output_b").is_duplicated().sum() == 0
    unordered = {(s, *sorted((a, b))) for s, a, b in pairs.select("study_id", "output_a", "output_b").iter_rows()}
    assert len(unordered) == 240  # not the same pair twice, in either order
    first_listed = sum(OUTPUTS.index(a) < OUTPUTS.index(b) for a, b in pairs.select("output_a", "output_b").iter_rows())
    assert 80 < first_listed < 160  # sides drawn at random, not in candidate order
    assert pairs["study_id"].to_list() != sorted(pairs["study_id"].to_list(), key=lambda s: int(s[1:]))  # shuffled across reports
    assert pairs.equals(blinded_pairs([f"s{i}" for i in range(40)], [f"text {i}" for i in range(40)], candidates, max_pairs=6, seed=1))
    capped = blinded_pairs(["s"], ["t"], [OUTPUTS], max_pairs=2, seed=0)
    assert capped.height == 2
    assert blinded_pairs(["s"], ["t"], [[OUTPUTS[0]] * 4], max_pairs=2, seed=0).height == 0  # one distinct candidate: no pair


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("pair_id,study_id,text,output_a\np1,s1,t,a\n", "line 1 (header): missing column(s) ['output_b']"),
        ("pair_id,study_id,text,output_a,output_b\np1,s1,t,a,b\np2,s2,,a,b\n", "line 3: empty text"),
        ("pair_id,study_id,text,output_a,output_b\np1,s1,t,a,b\np1,s2,t,a,b\n", "line 3: pair_id 'p1' appears twice"),
        ("pair_id,study_id,text,output_a,output_b\np1,s1,t,same,same \n", "line 2: output_a and output_b are the same output"),
        ("pair_id,study_id,text,output_a,output_b\n", "no pairs to review"),
    ],
)
def test_a_bad_pairs_file_is_refused_naming_file_line_and_problem(tmp_path, content, problem):
    path = tmp_path / "pairs.csv"
    path.write_text(content)
    with pytest.raises(BadInputError) as error:
        read_pairs(path)
    assert str(error.value).startswith(f"{path}: ") and problem in str(error.value)
    with pytest.raises(BadInputError, match="pairs.csv: "):
        create_app(path, tmp_path / "judgements.csv")


@pytest.fixture
def review(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.csv")
    judgements = tmp_path / "judgements.csv"
    app = create_app(tmp_path / "pairs.csv", judgements)
    yield {"client": app.test_client(), "app": app, "pairs": pairs, "judgements": judgements, "dir": tmp_path}
    app.extensions["judgements"].close()


def form_of(page: str) -> dict[str, str]:
    token = page.split('name="token" value="', 1)[1].split('"', 1)[0]
    pair_id = page.split('name="pair_id" value="', 1)[1].split('"', 1)[0]
    return {"token": token, "pair_id": pair_id}


def judgement_rows(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_page_shows_the_report_as_text_and_highlights_the_labels_that_differ(review):
    client, pairs = review["client"], review["pairs"]
    malicious = pairs.filter(pl.col("study_id") == "s0")["pair_id"][0]
    for _ in range(pairs["pair_id"].to_list().index(malicious)):  # judge up to the malicious report's pair
        page = client.get("/annotate/dr-a").get_data(as_text=True)
        client.post("/annotate/dr-a", data=form_of(page) | {"choice": "skip"})
    page = client.get("/annotate/dr-a").get_data(as_text=True)
    assert form_of(page)["pair_id"] == malicious
    assert "<script>document" not in page and "<img src=x" not in page and "<b>left</b>" not in page
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.count('<script src="/static/review.js"></script>') == 1 and page.count("<script") == 1  # our one local script
    assert "http://" not in page and "https://" not in page  # no asset from elsewhere
    assert page.count('<tr class="differs">') >= 1 and page.count('<tr class="differs">') + page.count('<tr class="same">') == 14


def test_submissions_are_checked_and_written_once_and_a_restart_resumes(review, monkeypatch):
    client, pairs, judgements = review["client"], review["pairs"], review["judgements"]
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    page = client.get("/annotate/Dr A").get_data(as_text=True)
    assert f"Pair 1 of {pairs.height}" in page
    form = form_of(page)
    refusals = [
        (form | {"token": "forged", "choice": "a"}, 403, "out of date"),
        (form | {"choice": "maybe"}, 400, "choice must be one of a, b, tie, skip, not &#39;maybe&#39;"),
        (form | {"pair_id": "p99999", "choice": "a"}, 400, "unknown pair_id"),
        (form | {"choice": "a", "comment": "x" * 2001}, 400, "at most 2000"),
    ]
    for data, status, message in refusals:
        response = client.post("/annotate/Dr A", data=data)
        assert response.status_code == status and message in response.get_data(as_text=True), data
    assert judgement_rows(judgements) == []  # the header, written at start
    assert client.get("/annotate/<script>").status_code == 400  # names are checked too
    response = client.post("/annotate/Dr A", data=form | {"choice": "a", "comment": " left   effusion\nmissed "})
    assert response.status_code == 303 and response.headers["Location"].endswith("/annotate/Dr%20A") and len(synced) == 1
    replay = client.post("/annotate/Dr A", data=form | {"choice": "b"})
    assert replay.status_code == 409 and "already judged" in replay.get_data(as_text=True)
    rows = judgement_rows(judgements)
    first = pairs.row(0, named=True)
    assert list(rows[0]) == list(JUDGEMENT_COLUMNS) and len(rows) == 1
    assert rows[0] | {"judged_at": ""} == {"study_id": first["study_id"], "output_a": first["output_a"], "output_b": first["output_b"], "preferred": "a",
                                          "annotator": "Dr A", "pair_id": first["pair_id"], "comment": "left effusion missed", "judged_at": ""}
    client.post("/annotate/Dr A", data=form_of(client.get("/annotate/Dr A").get_data(as_text=True)) | {"choice": "tie"})
    assert f"Pair 3 of {pairs.height}" in client.get("/annotate/Dr A").get_data(as_text=True)
    review["app"].extensions["judgements"].close()  # the first server stops
    restarted = create_app(review["dir"] / "pairs.csv", judgements).test_client()
    assert f"Pair 3 of {pairs.height}" in restarted.get("/annotate/Dr A").get_data(as_text=True)
    assert f"Pair 1 of {pairs.height}" in restarted.get("/annotate/Dr B").get_data(as_text=True)  # each annotator judges every pair
    stale = restarted.post("/annotate/Dr A", data=form_of(page) | {"choice": "b"})
    assert stale.status_code == 403  # a page from before the restart: reload, nothing written
    assert len(judgement_rows(judgements)) == 2
    restarted.application.extensions["judgements"].close()


def test_a_regenerated_review_set_resumes_at_the_first_pair_not_judged_by_its_content(tmp_path):
    """review_set reran: the pairs are renumbered and new ones came in. A returning annotator's
    judgements count by what was judged (report and the two outputs, either side), not by pair_id."""
    def write(name, rows):
        pl.DataFrame(rows, schema=list(PAIR_COLUMNS), orient="row").write_csv(tmp_path / name)
        return tmp_path / name

    judgements = tmp_path / "judgements.csv"
    old = write("old.csv", [("p00001", "s0", "t0", OUTPUTS[0], OUTPUTS[1]),
                            ("p00002", "s1", "t1", OUTPUTS[0], OUTPUTS[2])])
    client = create_app(old, judgements).test_client()
    for _ in range(2):
        page = client.get("/annotate/dr-a").get_data(as_text=True)
        client.post("/annotate/dr-a", data=form_of(page) | {"choice": "a"})
    client.application.extensions["judgements"].close()
    new = write("new.csv", [
        ("p00001", "s2", "t2", OUTPUTS[0], OUTPUTS[3]),
        ("p00002", "s0", "t0", OUTPUTS[1], OUTPUTS[0]),  # judged, its sides swapped
        ("p00003", "s1", "t1", OUTPUTS[0], OUTPUTS[2]),  # judged
        ("p00004", "s3", "t3", OUTPUTS[1], OUTPUTS[2]),
    ])
    client = create_app(new, judgements).test_client()
    page = client.get("/annotate/dr-a").get_data(as_text=True)
    assert form_of(page)["pair_id"] == "p00001" and "Pair 3 of 4" in page
    replay = client.post("/annotate/dr-a", data=form_of(page) | {"pair_id": "p00003", "choice": "b"})
    assert replay.status_code == 409  # judged before under another id: nothing written
    client.post("/annotate/dr-a", data=form_of(page) | {"choice": "b"})
    assert form_of(client.get("/annotate/dr-a").get_data(as_text=True))["pair_id"] == "p00004"
    assert [row["pair_id"] for row in judgement_rows(judgements)] == ["p00001", "p00002", "p00001"]
    assert form_of(client.get("/annotate/dr-b").get_data(as_text=True))["pair_id"] == "p00001"
    client.application.extensions["judgements"].close()


def test_the_preferences_rule_pairs_a_and_b_and_counts_ties_and_skips(review):
    client, judgements = review["client"], review["judgements"]
    for choice in ("a", "b", "tie", "skip"):
        client.post("/annotate/dr-a", data=form_of(client.get("/annotate/dr-a").get_data(as_text=True)) | {"choice": choice})
    rows = judgement_rows(judgements)
    reports = review["pairs"].select("study_id", "text").unique("study_id")
    drops = DropLog()
    pairs = read_human_judgements(str(judgements), reports, PromptSettings("mentioned"), drops)
    assert pairs.height == 2 and drops.counts() == {"skip": 1, "tie": 1}
    assert pairs["chosen"].to_list() == [rows[0]["output_a"], rows[1]["output_b"]] and (pairs["source"] == "human").all()


def test_without_a_judgements_file_the_preferences_job_says_how_to_produce_one(tmp_path):
    reports = tmp_path / "reports.parquet"
    pl.DataFrame({"study_id": ["s1"], "split": ["validate"], "text": ["No effusion."]}).write_parquet(reports)
    rlhf = {"judge": "human", "human_judgements": "data/preferences/radiologist_judgements.csv", "preference_splits": ["validate"]}
    with pytest.raises(BadInputError) as error:
        collect_preferences({"reports": str(reports)}, rlhf, PromptSettings("mentioned"), {"batch_size": 8, "max_new_tokens": 16}, {}, "results/review/pairs.csv")
    message = str(error.value)
    assert message.startswith("rlhf.human_judgements: data/preferences/radiologist_judgements.csv does not exist")
    assert "review_set" in message and "cxrlabel review --pairs results/review/pairs.csv --judgements data/preferences/radiologist_judgements.csv" in message


def test_evidence_format_outputs_show_their_words_and_quotes_as_text(tmp_path):
    outputs = ['{"Pleural Effusion": ["positive", "<b>left</b> effusion"], "No Finding": "positive"}', '{"Pleural Effusion": "negative"}']
    blinded_pairs(["s0"], [MALICIOUS], [outputs], max_pairs=1, seed=0).write_csv(tmp_path / "pairs.csv")
    app = create_app(tmp_path / "pairs.csv", tmp_path / "judgements.csv")
    page = app.test_client().get("/annotate/dr-a").get_data(as_text=True)
    app.extensions["judgements"].close()
    assert "not a well-formed label set" not in page
    assert '<q class="quote">&lt;b&gt;left&lt;/b&gt; effusion</q>' in page and "<b>left</b>" not in page
    assert page.count('<tr class="differs">') == 2  # Pleural Effusion and No Finding


# The judgements file and the server, as real use finds them (issue 32): each case refused at
# start with the file named, or answered without harm; the audit page shares these pieces.

def judgements_text(columns=JUDGEMENT_COLUMNS, rows=(("s1", "x", "y", "a", "dr-a", "p1", "", "2026-01-01T00:00:00+00:00"),)) -> str:
    return "".join(",".join(fields) + "\r\n" for fields in (columns, *rows))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (judgements_text(columns=("study_id", "output_a", "output_b", "annotator", "preferred", "pair_id", "comment", "judged_at")),
         "line 1 (header): not exactly study_id,output_a,output_b,preferred,annotator,pair_id,comment,judged_at"),
        (judgements_text().removesuffix("\r\n"), "the last line does not end with a line break"),
    ],
    ids=["columns_in_another_order", "no_final_newline"],
)
def test_a_judgements_file_that_appends_would_corrupt_is_refused_at_start(tmp_path, content, problem):
    write_pairs(tmp_path / "pairs.csv")
    judgements = tmp_path / "judgements.csv"
    judgements.write_bytes(content.encode())
    with pytest.raises(BadInputError) as error:
        create_app(tmp_path / "pairs.csv", judgements)
    assert str(error.value).startswith(f"{judgements}: ") and problem in str(error.value)
    assert judgements.read_bytes() == content.encode()  # left as it was
    assert MALICIOUS not in str(error.value)


@pytest.mark.parametrize("where", ["under_a_file", "a_directory"])
def test_an_unwritable_judgements_path_is_refused_at_start(tmp_path, where):
    write_pairs(tmp_path / "pairs.csv")
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    judgements = tmp_path / "afile/judgements.csv" if where == "under_a_file" else tmp_path / "adir"
    with pytest.raises(BadInputError, match="cannot be opened for writing"):
        create_app(tmp_path / "pairs.csv", judgements)


def test_a_second_server_on_the_same_judgements_file_is_refused(review):
    with pytest.raises(BadInputError, match="another server is writing to this file"):
        create_app(review["dir"] / "pairs.csv", review["judgements"])
    review["app"].extensions["judgements"].close()
    create_app(review["dir"] / "pairs.csv", review["judgements"]).extensions["judgements"].close()  # free once the first has stopped


def test_a_full_disk_during_an_append_leaves_the_file_whole_and_says_so(review):
    """A write cut short by the kernel (the file size limit: as a full disk, a partial write, then
    an error) is rolled back and answered 503; the retry is written whole, and both the server
    and the preferences rule read the file afterwards."""
    client, judgements = review["client"], review["judgements"]
    client.post("/annotate/dr-a", data=form_of(client.get("/annotate/dr-a").get_data(as_text=True)) | {"choice": "a"})
    before = judgements.read_bytes()
    form = form_of(client.get("/annotate/dr-a").get_data(as_text=True)) | {"choice": "b"}
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 20, limits[1]))
    try:
        full = client.post("/annotate/dr-a", data=form)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    message = full.get_data(as_text=True)
    assert full.status_code == 503 and "nothing was saved" in message and "submit this judgement again" in message and str(judgements) in message
    assert judgements.read_bytes() == before
    assert client.post("/annotate/dr-a", data=form).status_code == 303  # the retry
    rows = judgement_rows(judgements)
    assert [row["preferred"] for row in rows] == ["a", "b"] and all(len(row) == len(JUDGEMENT_COLUMNS) for row in rows)
    review["app"].extensions["judgements"].close()
    restarted = create_app(review["dir"] / "pairs.csv", judgements)
    assert "Pair 3 of" in restarted.test_client().get("/annotate/dr-a").get_data(as_text=True)
    restarted.extensions["judgements"].close()
    reports = review["pairs"].select("study_id", "text").unique("study_id")
    assert read_human_judgements(str(judgements), reports, PromptSettings("mentioned"), DropLog()).height == 2


def test_two_appends_at_once_are_two_whole_lines(tmp_path):
    from cxrlabel.review.csvfile import AppendOnlyCsv  # here: the module is new in issue 32, so the other tests also run on the code before it

    with AppendOnlyCsv(tmp_path / "log.csv", ("a", "b")) as log:
        threads = [threading.Thread(target=log.append, args=({"a": str(i), "b": "x\ny," * 50},)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(int(row["a"]) for row in judgement_rows(tmp_path / "log.csv")) == list(range(20))
    with AppendOnlyCsv(tmp_path / "log.csv", ("a", "b")) as log, pytest.raises(ValueError, match="not"):
        log.append({"b": "1", "a": "2", "c": "3"})  # by name, and every column only


def test_other_host_names_are_refused_and_nothing_of_the_review_is_served(review):
    client = review["client"]
    for path in ("/", "/annotate/dr-a", "/static/review.js"):
        refused = client.get(path, headers={"Host": "attacker.example"})
        body = refused.get_data(as_text=True)
        assert refused.status_code == 421 and 'name="token"' not in body and "Report" not in body, path
    assert client.post("/annotate/dr-a", headers={"Host": "attacker.example:8000"}, data={"choice": "a"}).status_code == 421
    for host in ("localhost", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST:8000"):
        assert client.get("/annotate/dr-a", headers={"Host": host}).status_code == 200, host


def test_a_token_is_valid_for_the_annotator_it_was_issued_for_only(review):
    client, judgements = review["client"], review["judgements"]
    alice = form_of(client.get("/annotate/alice").get_data(as_text=True))
    refused = client.post("/annotate/mallory", data=alice | {"choice": "a"})
    assert refused.status_code == 403 and "another annotator" in refused.get_data(as_text=True)
    assert judgement_rows(judgements) == []
    assert client.post("/annotate/alice", data=alice | {"choice": "a"}).status_code == 303


def test_every_response_forbids_framing_and_content_from_elsewhere(review):
    client = review["client"]
    responses = [client.get("/"), client.get("/annotate/dr-a"), client.get("/static/review.js"), client.post("/annotate/dr-a", data={}),
                 client.get("/", headers={"Host": "attacker.example"})]
    for response in responses:
        csp = response.headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, response.status
        assert response.headers.get("X-Frame-Options") == "DENY" and response.headers.get("X-Content-Type-Options") == "nosniff"


def test_a_remote_server_needs_its_access_token(tmp_path):
    from cxrlabel.review.web import host_names  # new in issue 32, as above

    write_pairs(tmp_path / "pairs.csv")
    with pytest.raises(ValueError, match="--allow-remote"):
        host_names("0.0.0.0")
    with pytest.raises(ValueError, match="--server-name"):
        host_names("0.0.0.0", allow_remote=True)
    hosts = host_names("0.0.0.0", ["review.example"], allow_remote=True)
    app = create_app(tmp_path / "pairs.csv", tmp_path / "judgements.csv", hosts, access_token="sesame")
    client = app.test_client()
    assert client.get("/", headers={"Host": "review.example"}).status_code == 401
    assert client.get("/", headers={"Host": "localhost"}).status_code == 421
    entered = client.get("/?access=sesame", headers={"Host": "review.example"})
    assert entered.status_code == 303 and "HttpOnly" in entered.headers["Set-Cookie"] and "SameSite=Strict" in entered.headers["Set-Cookie"]
    assert client.get("/annotate/dr-a", headers={"Host": "review.example"}).status_code == 200  # by the cookie
    app.extensions["judgements"].close()


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["--port", "70000"], "--port: 70000: a TCP port is 1-65535"),
        (["--host", "0.0.0.0"], "pass --allow-remote"),
        (["--judgements", "{tmp}/pairs.csv/judgements.csv"], "cannot be opened for writing"),
    ],
    ids=["port_out_of_range", "remote_host_without_allow_remote", "unwritable_judgements"],
)
def test_review_options_are_checked_before_anything_is_served(tmp_path, monkeypatch, capsys, options, problem):
    import werkzeug.serving

    write_pairs(tmp_path / "pairs.csv")
    served = []
    monkeypatch.setattr(werkzeug.serving, "make_server", lambda *args, **kwargs: served.append(args) or SimpleNamespace(server_port=args[1], serve_forever=lambda: None))
    arguments = ["review", "--pairs", str(tmp_path / "pairs.csv"), "--judgements", str(tmp_path / "j.csv"), *(o.format(tmp=tmp_path) for o in options)]
    try:
        status = main(arguments)
    except SystemExit as exit:  # argparse's own refusal
        status = exit.code
    assert status == 2 and problem in capsys.readouterr().err and served == []


def test_the_real_server_answers_its_own_host_names_only_and_one_per_judgements_file(tmp_path):
    write_pairs(tmp_path / "pairs.csv")
    judgements = tmp_path / "judgements.csv"
    port = free_port()
    server = ReviewServer(tmp_path / "pairs.csv", judgements, port, tmp_path / "server.log").start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/annotate/dr-a", headers={"Host": f"attacker.example:{port}"})
        response = connection.getresponse()
        assert response.status == 421 and b"token" not in response.read()
        second = subprocess.run([*server.args[:-1], str(free_port())], capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and f"{judgements}: another server is writing to this file" in second.stderr
    finally:
        server.kill()
