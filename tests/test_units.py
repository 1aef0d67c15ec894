"""The systemd units in contrib/systemd/: systemd-analyze accepts them, and the
service's ExecStart, with the defaults file expanded, passes our own parser."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from beanstalk_py.options import parse_args

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "contrib" / "systemd"
INSTALLED_BINARY = "/usr/local/bin/beanstalk-py"
UNIT_FILES = ("beanstalk-py.service", "beanstalk-py.socket", "beanstalk-py-unix.socket")


def unit_settings(path: Path) -> dict[str, list[str]]:
    """KEY -> every value it is given (continuation lines are not used in our units)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def defaults() -> dict[str, str]:
    """The EnvironmentFile's assignments, read as systemd does (quotes removed)."""
    env: dict[str, str] = {}
    for line in (UNITS / "beanstalk-py.default").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            words = shlex.split(value)
            env[key.strip()] = " ".join(words)
    return env


def exec_start_words() -> list[str]:
    """ExecStart as systemd expands it: ``$VAR`` becomes its words, ``${VAR}`` one word."""
    service = unit_settings(UNITS / "beanstalk-py.service")
    (line,) = service["ExecStart"]
    env = {}
    for assignment in service.get("Environment", []):
        key, _, value = assignment.partition("=")
        env[key] = value
    env.update(defaults())
    words: list[str] = []
    for word in shlex.split(line.lstrip("@-:+!")):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            words.extend(env.get(whole.group(1), "").split())
        else:
            words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return words


def test_exec_start_options_pass_the_daemons_own_parser() -> None:
    words = exec_start_words()
    assert words[0] == INSTALLED_BINARY
    assert "--max-connections" in words  # the defaults file was expanded
    opts = parse_args(words[1:])  # exits (status 5) on anything the daemon rejects
    service = unit_settings(UNITS / "beanstalk-py.service")
    assert opts.binlog_dir == "/var/lib/" + service["StateDirectory"][0]
    assert opts.user is None  # DynamicUser= runs it unprivileged already
    assert 0 < opts.max_connections < int(service["LimitNOFILE"][0])


def test_the_defaults_files_tls_example_parses_too() -> None:
    text = (UNITS / "beanstalk-py.default").read_text()
    example = [line.lstrip("#").split() for line in text.splitlines() if line.startswith("#   --")]
    words = exec_start_words()[1:] + [word for line in example for word in line]
    opts = parse_args(words)
    assert opts.tls_listen == "0.0.0.0:11301"
    assert opts.tls_key is not None and opts.tls_key.startswith("/run/credentials/beanstalk-py.service/")


def test_service_is_hardened_type_notify() -> None:
    service = unit_settings(UNITS / "beanstalk-py.service")
    expected = {
        "Type": "notify", "Restart": "on-failure", "DynamicUser": "yes", "ProtectSystem": "strict",
        "NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectHome": "yes", "LimitNOFILE": "65536",
    }
    for key, value in expected.items():
        assert service[key] == [value], key
    assert service["WatchdogSec"] and service["StateDirectory"] and service["EnvironmentFile"]
    assert "AF_UNIX" in service["RestrictAddressFamilies"][0]  # NOTIFY_SOCKET is a unix socket


def test_socket_units_listen_where_the_readme_says() -> None:
    tcp = unit_settings(UNITS / "beanstalk-py.socket")
    unix = unit_settings(UNITS / "beanstalk-py-unix.socket")
    assert tcp["ListenStream"] == ["127.0.0.1:11300"]
    assert unix["ListenStream"][0].startswith("/run/")
    assert unix["SocketMode"] == ["0660"] and unix["SocketGroup"] == ["www-data"]
    # beanstalk-py serves every inherited socket: the two may run side by side.
    assert "Conflicts" not in tcp and "Conflicts" not in unix
    assert unix["Service"] == ["beanstalk-py.service"]  # the TCP one shares the service's name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point it at this venv's script.
    script = Path(sys.executable).with_name("beanstalk-py")
    if not script.exists():
        pytest.skip(f"no console script at {script} (pip install the package)")
    for name in UNIT_FILES:
        text = (UNITS / name).read_text().replace(INSTALLED_BINARY, str(script))
        (tmp_path / name).write_text(text)
    env = dict(os.environ, SYSTEMD_LOG_LEVEL="notice")
    if shutil.which("man"):
        # Documentation=man:beanstalk-py(1) is checked too, against our page.
        (tmp_path / "man" / "man1").mkdir(parents=True)
        shutil.copy(ROOT / "man" / "beanstalk-py.1", tmp_path / "man" / "man1")
        env["MANPATH"] = str(tmp_path / "man")
        man = []
    else:
        man = ["--man=no"]
    result = subprocess.run(
        ["systemd-analyze", "verify", *man, *(f"./{name}" for name in UNIT_FILES)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
