"""Run the test suite against the installed beanstalk_py instead of the tree's sources.

``python -m pytest`` from the repository imports ``beanstalk_py`` from the tree
(the root is on sys.path: conftest.py lives there, and the daemons the tests
start run ``python -m beanstalk_py`` from it), so it tests the pure build
whatever pip installed.  This runs the same tests from a copy of the
repository without ``beanstalk_py/``, where every import, in the test process
and in every daemon it starts, finds the installed package: the mypyc build
where ``pip install .`` compiled one (setup.py), else the pure one.

    .venv/bin/python tests/installed.py -q               # pytest's arguments
    BEANSTALK_PY_EXPECT_BUILD=compiled .venv/bin/python tests/installed.py -q

With ``BEANSTALK_PY_EXPECT_BUILD`` set (``.ci/run`` sets it where a C compiler
is present) a different installed build is an error, not a silent pure run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Not copied: the package itself (the point), build products, caches, results.
SKIP_AT_ROOT = {"beanstalk_py", ".git", ".venv", "build", "dist", ".mypy_cache", ".pytest_cache",
                ".hypothesis"}
SKIP_ANYWHERE = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so", "results")


def copy_without_package(dest: Path) -> None:
    for entry in ROOT.iterdir():
        if entry.name in SKIP_AT_ROOT or entry.name.endswith((".egg-info", ".so")):
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name, ignore=SKIP_ANYWHERE, symlinks=True)
        else:
            shutil.copy2(entry, dest / entry.name)


def installed_build(cwd: Path) -> tuple[str, str]:
    """(where the installed package is, its ``build ...`` line), as a daemon would see them."""
    probe = ("import beanstalk_py, beanstalk_py.build as b; "
             "print(beanstalk_py.__path__[0]); print(b.describe())")
    done = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"tests/installed.py: beanstalk_py is not installed for {sys.executable}:\n{done.stderr}")
    where, line = done.stdout.split("\n")[:2]
    return where, line


def main(args: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="beanstalk-py-installed-") as tmp:
        copy = Path(tmp)
        copy_without_package(copy)
        where, line = installed_build(copy)
        if Path(where).resolve() == ROOT / "beanstalk_py":
            sys.exit(f"tests/installed.py: {where} is the tree, not an installed package "
                     "(an editable install?); pip install . first")
        print(f"tests/installed.py: testing {where}: {line}", flush=True)
        expected = os.environ.get("BEANSTALK_PY_EXPECT_BUILD")
        if expected and line.split()[1] != expected:
            sys.exit(f"tests/installed.py: BEANSTALK_PY_EXPECT_BUILD={expected}, but the installed "
                     f"package says '{line}' (pip install -v . shows why)")
        return subprocess.call([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=copy)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
