"""A cookie-keeping HTTP client for the web console's tests (standard library only),
and the checks every console page must pass.

Importable from tests/ as http_rig.py is.
"""

from __future__ import annotations

import http.client
import re
import ssl
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, Optional
from urllib.parse import urlencode

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    text: str

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name)

    @property
    def cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []

    @property
    def csrf(self) -> str:
        found = re.search(r'<meta name="csrf-token" content="([^"]*)">', self.text)
        assert found, self.text[:500]
        return found.group(1)


@dataclass
class Browser:
    """Requests to one listener with a cookie jar, as a browser would send them."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    tls: Optional[ssl.SSLContext] = None  # set: HTTPS

    def request(self, method: str, path: str, form: Optional[dict[str, Any]] = None,
                headers: Optional[dict[str, str]] = None) -> Answer:
        if self.tls is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", self.port,
                                                                            context=self.tls, timeout=30)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form, doseq=True).encode()
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            answer = Answer(response.status, response.msg, response.read().decode("utf-8", "replace"))
        finally:
            conn.close()
        for line in answer.cookies:
            for name, morsel in SimpleCookie(line).items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return answer

    def get(self, path: str, **kwargs: Any) -> Answer:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: dict[str, Any], **kwargs: Any) -> Answer:
        return self.request("POST", path, form, **kwargs)

    def page(self, path: str) -> Answer:
        """A page that must render (200) and pass :func:`check_page`."""
        answer = self.get(path)
        assert answer.status == 200, (path, answer.status, answer.text[:800])
        check_page(answer)
        return answer

    def follow(self, answer: Answer) -> Answer:
        """The page a 303 (Post/Redirect/Get) leads to."""
        assert answer.status == 303, (answer.status, answer.text[:800])
        location = answer.header("location")
        assert location is not None and location.startswith("/ui/"), location
        return self.page(location)


def check_headers(answer: Answer) -> None:
    assert answer.header("content-security-policy") == CSP
    assert answer.header("x-content-type-options") == "nosniff"
    assert answer.header("referrer-policy") == "no-referrer"


def check_page(answer: Answer) -> None:
    """The security headers, and markup the CSP would block (which must not be there at all)."""
    check_headers(answer)
    assert answer.header("content-type") == "text/html; charset=utf-8"
    # Only real tags: an escaped body ("&lt;img onerror=...") is text, not markup.
    for tag in re.findall(r"<[a-zA-Z][^>]*>", answer.text):
        if tag.startswith("<script"):
            assert re.fullmatch(r'<script src="/ui/static/[^"]+" defer>', tag), f"inline script: {tag}"
        assert not tag.startswith("<style"), "inline <style>"
        assert not re.search(r"\sstyle\s*=", tag), f"a style attribute: {tag}"
        assert not re.search(r"\son[a-z]+\s*=", tag), f"an inline event handler: {tag}"
        assert "javascript:" not in tag.lower(), tag


def flash(answer: Answer) -> Optional[str]:
    found = re.search(r'<div class="flash (ok|error)" role="status">(.*?)</div>', answer.text, re.S)
    return f"{found.group(1)}: {found.group(2)}" if found else None
