"""The web console's session: a signed cookie, its CSRF token, and signed flash messages.

Bearer tokens suit scripts, not browsers, so the console trades a token for
a session once (``/ui/login``).  The cookie holds who, the role and an
expiry, signed with HMAC-SHA256 under a key made at random when the process
starts; it never holds the token, and a restart ends every session.  Without
``--http-tokens`` the console still gives each browser an anonymous session:
the CSRF token is derived from it, and a loopback listener needs CSRF
protection as much as any (a page the operator browses can post a form to
127.0.0.1).

No web framework here, so the tests can call it directly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .auth import ROLES, Principal

SESSION_COOKIE = "bspy_session"
FLASH_COOKIE = "bspy_flash"
COOKIE_PATH = "/ui"
SESSION_SECONDS = 12 * 3600  # a login lasts a working day
FLASH_SECONDS = 60  # a flash message is for the very next page
MAX_FLASH_TEXT = 500
NO_ROLE = ""  # an anonymous session: not logged in, but it can carry the login form's CSRF token


@dataclass(frozen=True)
class Session:
    sid: str  # random: the CSRF token is derived from it
    who: str
    role: str  # viewer, operator, or NO_ROLE
    expires: int  # unix seconds

    @property
    def principal(self) -> Optional[Principal]:
        return Principal(self.who, self.role) if self.role in ROLES else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs and checks the console's cookies and CSRF tokens under one per-process key."""

    def __init__(self, key: Optional[bytes] = None, clock: Callable[[], float] = time.time) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)
        self._clock = clock

    def _mac(self, purpose: bytes, data: bytes) -> str:
        # The purpose keeps a value signed for one use (a flash) from passing as another (a session).
        return _b64(hmac.new(self._key, purpose + b"\0" + data, hashlib.sha256).digest())

    def _seal(self, purpose: bytes, value: dict[str, Any]) -> str:
        payload = _b64(json.dumps(value, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(purpose, payload.encode())}"

    def _open(self, purpose: bytes, text: Optional[str]) -> Optional[dict[str, Any]]:
        """The value of a sealed text, or None: forged, garbled, or expired."""
        if not text or text.count(".") != 1:
            return None
        payload, mac = text.split(".")
        if not hmac.compare_digest(mac, self._mac(purpose, payload.encode())):
            return None
        try:
            value = json.loads(_unb64(payload))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if not isinstance(value, dict) or not isinstance(value.get("exp"), int) or value["exp"] < self._clock():
            return None
        return value

    # ------------------------------------------------------------------ sessions

    def new_session(self, who: str, role: str, seconds: int = SESSION_SECONDS) -> Session:
        return Session(secrets.token_hex(16), who, role, int(self._clock()) + seconds)

    def session_cookie(self, session: Session) -> str:
        return self._seal(b"session", {"sid": session.sid, "who": session.who, "role": session.role,
                                       "exp": session.expires})

    def session(self, cookie: Optional[str]) -> Optional[Session]:
        value = self._open(b"session", cookie)
        if value is None:
            return None
        sid, who, role = value.get("sid"), value.get("who"), value.get("role")
        if not (isinstance(sid, str) and isinstance(who, str) and (role in ROLES or role == NO_ROLE)):
            return None
        return Session(sid, who, role, value["exp"])

    def csrf(self, session: Session) -> str:
        """The CSRF token of a session: a page's forms carry it, a forged cross-site form cannot."""
        return self._mac(b"csrf", session.sid.encode())

    def csrf_ok(self, session: Optional[Session], token: Optional[str]) -> bool:
        return session is not None and bool(token) and hmac.compare_digest(str(token), self.csrf(session))

    # ------------------------------------------------------------------ flash

    def flash_cookie(self, kind: str, text: str) -> str:
        return self._seal(b"flash", {"kind": kind, "text": text[:MAX_FLASH_TEXT],
                                     "exp": int(self._clock()) + FLASH_SECONDS})

    def flash(self, cookie: Optional[str]) -> Optional[tuple[str, str]]:
        """(kind, text) of a flash cookie: signed, so no other site can put words on our pages."""
        value = self._open(b"flash", cookie)
        if value is None or value.get("kind") not in ("ok", "error") or not isinstance(value.get("text"), str):
            return None
        return value["kind"], value["text"]
