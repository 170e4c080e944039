"""Pages built from data that must stay data: names from file names and gallery files never become markup or code.

An HTML page of allinone (report.html, and any other report) is built with these rules:

- text goes through ``text()`` (``html.escape`` with quotes) and only into element content or quoted attributes;
- no inline event handler is ever built (``onclick=...``): behaviour lives in the page's one script, which reads
  ``data-`` attributes or a JSON block (``json_block()``: JSON inside ``<script type="application/json">``, with
  ``<``, ``>`` and ``&`` written as ``\\u003c`` etc. so no name can close the block);
- every URL of a local file is percent-encoded (``url()``: a ``#``, ``%``, ``?`` or space in a file name stays part of
  the name);
- markup is built by ``html()``: a template of the page's own markup whose every argument is escaped unless it is
  already ``Markup`` (the output of ``html()``/``join()``), so data can only reach a page as text;
- ``csp_meta(script)`` is a Content-Security-Policy that lets the page run only that one inline script (by its
  sha256) and load only its own folder's files and inline ``data:`` pictures: even a name that slipped through
  escaping could not run.
"""
from __future__ import annotations

import base64
import hashlib
import html as _html
import json
from urllib.parse import quote


def text(value) -> str:
    """``value`` as HTML text, safe in element content and in single- or double-quoted attributes."""
    return _html.escape(str(value), quote=True)


class Markup(str):
    """HTML made by ``html()`` or ``join()``: safe to put into a page as it is."""


def html(template: str, *args, **kwargs) -> Markup:
    """``template.format(*args, **kwargs)`` with every argument escaped by ``text()`` unless it is ``Markup``; the
    template is the page's own markup (never data). A format spec applies to numbers before escaping."""
    def safe(v):
        return v if isinstance(v, (Markup, int, float)) and not isinstance(v, bool) else text(v)
    return Markup(template.format(*(safe(a) for a in args), **{k: safe(v) for k, v in kwargs.items()}))


def join(parts, sep: str = "") -> Markup:
    """Markup parts joined; a part that is not Markup is escaped."""
    return Markup(text(sep).join(p if isinstance(p, Markup) else text(p) for p in parts))


def url(rel_path: str) -> str:
    """A run-relative file path as a URL: every character but letters, digits, ``/`` and ``-._~`` percent-encoded
    (UTF-8), so the browser asks for exactly that file."""
    return quote(str(rel_path), safe="/")


def json_block(element_id: str, data) -> str:
    """``data`` as a ``<script type="application/json">`` block (not executed; read with JSON.parse)."""
    body = json.dumps(data, allow_nan=False, ensure_ascii=False)
    body = body.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    body = body.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f'<script type="application/json" id="{text(element_id)}">{body}</script>'


def script_hash(script: str) -> str:
    """The CSP source for an inline script: ``'sha256-<base64>'`` of its exact text."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode() + "'"


def csp(script: str) -> str:
    """The policy: nothing from the network, the one inline ``script`` (by hash), inline styles, pictures and
    videos from the page's own folder or ``data:``; no plugins, frames, forms or base-URL changes."""
    return ("default-src 'none'; "
            f"script-src {script_hash(script)}; "
            "style-src 'unsafe-inline'; "
            "img-src 'self' data:; media-src 'self'; "
            "object-src 'none'; frame-src 'none'; base-uri 'none'; form-action 'none'")


def csp_meta(script: str) -> str:
    """The ``<meta http-equiv="Content-Security-Policy">`` tag for ``csp(script)`` (put it first in ``<head>``)."""
    return f'<meta http-equiv="Content-Security-Policy" content="{text(csp(script))}">'


def inline_script(script: str) -> str:
    """The ``<script>`` element whose text is exactly ``script`` (the text ``csp()`` hashed)."""
    if "</" in script:
        raise ValueError("an inline script must not contain '</'")
    return f"<script>{script}</script>"


__all__ = ["Markup", "csp", "csp_meta", "html", "inline_script", "join", "json_block", "script_hash", "text", "url"]
