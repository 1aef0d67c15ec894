"""The man page documents every option and renders cleanly; COMPAT.md is where README says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from beanstalk_py.options import USAGE

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man" / "beanstalk-py.1"


def test_man_page_documents_every_option() -> None:
    text = MAN.read_text()
    flags = set(re.findall(r"^ (-[a-zA-Z])", USAGE, re.M)) | {"-c", "-n"}
    for flag in sorted(flags):
        assert f".BI \\{flag}" in text or f".B \\{flag}" in text or f"\\{flag}" in text, flag
    for topic in ("SIGUSR1", "SIGTERM", "LISTEN_FDS", "127.0.0.1", "EXIT STATUS", "DIFFERENCES FROM BEANSTALKD"):
        assert topic in text


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_renders_without_warnings() -> None:
    result = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and result.stderr == ""


def test_compat_lists_the_known_differences() -> None:
    text = (ROOT / "COMPAT.md").read_text()
    for topic in ("127.0.0.1", "223 characters", "TTR expiry", "arrival order", "double-quoted", "## Binlog"):
        assert topic in text
