"""Every ``--http-*`` option in one value, handed from start-up to the listener and the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..options import DEFAULT_HTTP_MAX_CONNECTIONS, Options


@dataclass(frozen=True)
class HttpSettings:
    spec: str  # ADDR:PORT or unix:PATH
    tokens_path: Optional[str] = None  # bearer tokens (viewer/operator), mode 0600
    cert: Optional[str] = None  # HTTPS certificate chain (PEM)
    key: Optional[str] = None  # its private key
    client_ca: Optional[str] = None  # set: clients must present a certificate it signed (mTLS)
    max_connections: int = DEFAULT_HTTP_MAX_CONNECTIONS  # HTTP connections served at once
    read_only: bool = False  # every requester is a viewer
    status_secret_path: Optional[str] = None  # HMAC key of /status/{token}; None: /status is off
    cors_origins: tuple[str, ...] = ("*",)  # origins allowed to read /status

    @classmethod
    def from_options(cls, opts: Options) -> "HttpSettings":
        assert opts.http is not None
        return cls(spec=opts.http, tokens_path=opts.http_tokens, cert=opts.http_cert, key=opts.http_key,
                   client_ca=opts.http_client_ca, max_connections=opts.http_max_connections,
                   read_only=opts.http_read_only, status_secret_path=opts.http_status_secret,
                   cors_origins=opts.http_cors_origins)

    @property
    def credentials(self) -> bool:
        """Whether requesters prove who they are (tokens or client certificates):
        without, the listener must stay on loopback or a unix socket."""
        return self.tokens_path is not None or self.client_ca is not None
