"""What every page server of this package shares (the review page, and an audit page built the
same way): which host names it answers, the access token a remote server requires, form tokens
bound to whom a page was made for, the security headers, and the threaded server itself.

A server answers only the host names it was configured for (421 otherwise): a page on another
site that rebinds its own name to 127.0.0.1 sends its own name as ``Host`` and gets nothing. It
binds to this machine only unless ``allow_remote`` is given, and then every request needs the
access token printed at start (once in the link, then a cookie).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Collection, Sequence

from flask import Flask, abort, redirect, request
from werkzeug.wrappers import Response

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")
ACCESS_PARAMETER = "access"
ACCESS_COOKIE = "cxrlabel_access"
SECURITY_HEADERS = {
    # every asset is the package's own; no page of another site may frame these pages
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # report text stays out of caches
}


def host_names(host: str, server_names: Sequence[str] = (), allow_remote: bool = False) -> frozenset[str]:
    """The ``Host`` names a server bound to ``host`` answers: the loopback names (and
    ``server_names``) on this machine; elsewhere only with ``allow_remote``, the bound address
    and ``server_names``. Raises ValueError saying which option is missing."""
    names = {name.lower() for name in server_names}
    shown = host or "''"
    if host in LOOPBACK:
        return frozenset(names | set(LOOPBACK))
    if not allow_remote:
        raise ValueError(f"--host {shown}: not this machine only, so anyone who can reach it could read the reports; "
                         "pass --allow-remote to serve it there (every request then needs the access link printed at start)")
    if host not in WILDCARD:
        names.add(host.lower())
    if not names:
        raise ValueError(f"--host {shown}: every address of this machine: name the host names annotators open the page by (--server-name)")
    return frozenset(names)


def name_of(host_header: str) -> str:
    """The host name of a ``Host`` header, without its port (``[::1]:8000`` -> ``::1``)."""
    host_header = host_header.strip().lower()
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def protect(app: Flask, hosts: Collection[str], access_token: str | None = None) -> None:
    """Refuse requests for other host names (421) and, with ``access_token``, without it (401);
    add :data:`SECURITY_HEADERS` to every response, refusals included."""

    @app.before_request
    def guard() -> Response | None:
        if name_of(request.host) not in hosts:
            abort(421, "this server does not answer for that host name: open the address it printed at start")
        if access_token is None:
            return None
        offered = request.args.get(ACCESS_PARAMETER) or request.cookies.get(ACCESS_COOKIE, "")
        if not hmac.compare_digest(offered.encode(), access_token.encode()):
            abort(401, "this page needs the access link the server printed at start")
        if ACCESS_PARAMETER in request.args:  # the link's token moves into a cookie, out of the address bar and history
            response = redirect(request.path, code=303)
            response.set_cookie(ACCESS_COOKIE, access_token, httponly=True, samesite="Strict")
            return response
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response


class FormTokens:
    """Each form's token: a MAC of whom the page was made for (an annotator) under a key made at
    start, so a form is valid for that annotator, on this run of the server, only."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def issue(self, subject: str) -> str:
        return hmac.new(self._key, subject.encode(), hashlib.sha256).hexdigest()

    def valid(self, subject: str, token: str) -> bool:
        return hmac.compare_digest(self.issue(subject).encode(), token.encode())


def serve_app(app: Flask, host: str, port: int, hosts: Collection[str], access_token: str | None, what: str) -> None:
    """Run ``app`` on a threaded server (several annotators at once) until interrupted, logging
    its address by one of ``hosts`` (with the access link when it needs one)."""
    from werkzeug.serving import make_server

    server = make_server(host, port, app, threaded=True)
    name = host if host not in WILDCARD else sorted(hosts)[0]
    shown = f"[{name}]" if ":" in name else name
    link = f"http://{shown}:{server.server_port}/" + (f"?{ACCESS_PARAMETER}={access_token}" if access_token else "")
    if access_token:
        log.warning("serving beyond this machine on %s: give the access link only to the annotators (plain HTTP: on a trusted network only)", host)
    log.info("%s at %s (Ctrl-C stops)", what, link)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
