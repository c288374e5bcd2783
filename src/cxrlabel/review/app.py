"""``cxrlabel review``: a local web page on which radiologists judge pairs of label outputs.

Server-rendered (Flask, Jinja with autoescaping: a report's text is always shown as text), every
asset served from this package, no script or font from elsewhere. An annotator gives a name,
then sees one pair at a time: the report, and the two label sets observation by observation with
the rows that differ highlighted; A / B / tie / skip by button or key (a, b, t, s), an optional
comment. Each judgement is appended and synced to the judgements file before the next pair is
shown (:class:`~cxrlabel.review.pairs.JudgementStore`), and the page always shows the annotator's
first pair not yet judged (by its report and outputs, so also in a regenerated review set), so a
reload, a restart or another day resumes where they stopped.

Every form carries a token made for its annotator by this run of the server (a page from another
site, for another annotator, or from before a restart, is refused) and the pair it judges (a
replayed or stale submission is refused, nothing written). Host names, the access token of a
remote server and the security headers: :mod:`cxrlabel.review.web`; the judgements file's checks
at start, lock and whole-line appends: :mod:`cxrlabel.review.csvfile`.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Collection
from pathlib import Path

from flask import Flask, abort, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from cxrlabel.instruct import CODE_TO_WORD, Parsed, parse_completion
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.review.csvfile import AppendFailed
from cxrlabel.review.pairs import CHOICES, JudgementStore, pair_key, read_pairs
from cxrlabel.review.web import LOOPBACK, FormTokens, host_names, protect, serve_app

log = logging.getLogger(__name__)

ANNOTATOR_NAME = re.compile(r"[\w][\w .'-]{0,63}")
MAX_COMMENT = 2000


def label_rows(a: Parsed, b: Parsed) -> list[dict[str, object]]:
    """One row per observation: the certainty word in each output (blank: empty), the quote an
    ``evidence``-format output gave for it (empty where none), and whether the words differ."""
    word = {**CODE_TO_WORD, None: ""}
    return [
        {"observation": name, "a": word[a.labels[name]], "b": word[b.labels[name]], "quote_a": a.quotes.get(name, ""), "quote_b": b.quotes.get(name, ""),
         "differs": a.labels[name] != b.labels[name]}
        for name in OBSERVATIONS
    ]


def parse_output(output: str) -> Parsed:
    """A candidate output of any completion format: parsed as the ``evidence`` format, whose values
    are bare words or ``[word, quote]`` for any subset of the observations (``mentioned`` and
    ``evidence`` outputs parse without error; ``full`` ones too, but for their ``blank`` values)."""
    return parse_completion(output, "evidence")


def malformed(parsed: Parsed) -> str | None:
    """Why an output is not a well-formed label set ("blank" values of the full format are fine)."""
    problems = [p for p in (parsed.error or "").split("; ") if p and not p.endswith("'blank'")]
    return "; ".join(problems) or None


def create_app(pairs_path: str | Path, judgements_path: str | Path, hosts: Collection[str] = LOOPBACK, access_token: str | None = None) -> Flask:
    """The review app for the pairs at ``pairs_path``, appending to ``judgements_path`` (opened,
    checked and locked here: ``app.extensions["judgements"]``, a :class:`JudgementStore`), answering
    the host names ``hosts`` (and, with ``access_token``, requests that carry it only)."""
    pairs = read_pairs(pairs_path).to_dicts()
    by_id = {pair["pair_id"]: pair for pair in pairs}
    store = JudgementStore(judgements_path)
    tokens = FormTokens()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.extensions["judgements"] = store
    protect(app, hosts, access_token)

    def annotator_name(name: str) -> str:
        if not ANNOTATOR_NAME.fullmatch(name):
            abort(400, "an annotator name is 1-64 letters, digits, spaces or . ' - _, starting with a letter or digit")
        return name

    @app.errorhandler(HTTPException)
    def explain(error: HTTPException):
        return render_template("error.html", code=error.code, title=error.name, message=error.description), error.code

    @app.get("/")
    def start():
        name = request.args.get("annotator", "").strip()
        if name:
            return redirect(url_for("annotate", annotator=annotator_name(name)))
        return render_template("start.html", n_pairs=len(pairs), judgements=str(judgements_path))

    @app.get("/annotate/<annotator>")
    def annotate(annotator: str):
        annotator_name(annotator)
        judged = store.judged_by(annotator)
        pending = [pair for pair in pairs if pair_key(pair) not in judged]
        if not pending:
            return render_template("done.html", annotator=annotator, n_pairs=len(pairs), judgements=str(judgements_path))
        pair = pending[0]
        a, b = (parse_output(pair[side]) for side in ("output_a", "output_b"))
        return render_template(
            "pair.html", annotator=annotator, pair=pair, rows=label_rows(a, b), malformed_a=malformed(a), malformed_b=malformed(b),
            position=len(pairs) - len(pending) + 1, n_pairs=len(pairs), token=tokens.issue(annotator), choices=CHOICES,
        )

    @app.post("/annotate/<annotator>")
    def judge(annotator: str):
        annotator_name(annotator)
        form = request.form
        if not tokens.valid(annotator, form.get("token", "")):
            abort(403, "this page is out of date (the server was restarted), was made for another annotator or came from elsewhere: reload it and judge again")
        pair = by_id.get(form.get("pair_id", ""))
        if pair is None:
            abort(400, f"unknown pair_id {form.get('pair_id', '')!r}: not in the pairs file")
        choice = form.get("choice", "")
        if choice not in CHOICES:
            abort(400, f"choice must be one of {', '.join(CHOICES)}, not {choice!r}")
        comment = " ".join(form.get("comment", "").split())
        if len(comment) > MAX_COMMENT:
            abort(400, f"the comment is {len(comment)} characters: at most {MAX_COMMENT}")
        try:
            written = store.append(pair, choice, annotator, comment)
        except AppendFailed as error:
            log.error("%s", error)
            abort(503, f"{error} (the file is as it was before): once the server's disk is fixed, submit this judgement again")
        if not written:
            abort(409, f"{annotator} already judged pair {pair['pair_id']}: nothing was written (a resubmitted form); the next pair is on the annotation page")
        log.info("%s judged %s: %s", annotator, pair["pair_id"], choice)
        return redirect(url_for("annotate", annotator=annotator), code=303)

    return app


def serve(pairs_path: str | Path, judgements_path: str | Path, host: str = "127.0.0.1", port: int = 8000,
          allow_remote: bool = False, server_names: Collection[str] = ()) -> None:
    """Run the review app until interrupted. Beyond this machine (``allow_remote``) every request
    needs an access token made here and printed in the page's link."""
    hosts = host_names(host, tuple(server_names), allow_remote)
    access_token = None if host in LOOPBACK else secrets.token_urlsafe(24)
    app = create_app(pairs_path, judgements_path, hosts, access_token)
    serve_app(app, host, port, hosts, access_token, f"reviewing {pairs_path} -> {judgements_path} (every acknowledged judgement is on disk)")
