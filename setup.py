"""Build: the hot modules compiled with mypyc where that is possible, else pure Python.

pyproject.toml has the metadata; this file only decides the extension modules.
The modules listed in beanstalk_py/build.py (HOT_MODULES) are compiled with
mypyc when a C compiler, the Python headers and mypy (a build requirement)
are there; otherwise, or when ``BEANSTALK_PY_PURE=1`` is set, or when the C
build fails, the same modules are installed as plain Python.  Either way the
wheel carries every .py file, and the build says which it made on stderr
(``pip install -v`` shows it; ``beanstalk-py -v`` says it afterwards).

Editable installs (``pip install -e``) stay pure: a compiled module next to
its source would hide every later edit of it.
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
import sysconfig
from typing import Any, Optional

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "beanstalk_py"
# setup.py commands that build extension modules; metadata queries
# (egg_info, dist_info) need none and so never run mypy.
BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "install", "bdist", "bdist_egg"}
EDITABLE_COMMANDS = {"develop", "editable_wheel"}


def say(message: str) -> None:
    print(f"beanstalk-py build: {message}", file=sys.stderr, flush=True)


def hot_modules() -> list[str]:
    """HOT_MODULES from beanstalk_py/build.py, read without importing the package."""
    with open(os.path.join(HERE, PACKAGE, "build.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "HOT_MODULES" for target in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise RuntimeError("beanstalk_py/build.py has no HOT_MODULES")


def why_pure() -> Optional[str]:
    """Why this build cannot be compiled, or None when it can."""
    if os.environ.get("BEANSTALK_PY_PURE", "") not in ("", "0"):
        return "BEANSTALK_PY_PURE is set"
    if sys.implementation.name != "cpython":
        return f"mypyc needs CPython, not {sys.implementation.name}"
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    if not compiler or shutil.which(compiler[0]) is None:
        return f"no C compiler ({compiler[0] if compiler else 'CC'} not found)"
    include = sysconfig.get_paths().get("include", "")
    if not os.path.exists(os.path.join(include, "Python.h")):
        return f"no Python headers (no Python.h in {include})"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypy (which brings mypyc) is not installed"
    return None


def compiled_extensions() -> list[Any]:
    """mypyc's extension modules for HOT_MODULES, or [] for the pure build."""
    commands = set(sys.argv[1:])
    if commands & EDITABLE_COMMANDS:
        say("pure Python (an editable install keeps the sources live)")
        return []
    if not commands & BUILD_COMMANDS:
        return []
    reason = why_pure()
    if reason is not None:
        say(f"pure Python ({reason})")
        return []
    from mypyc.build import mypycify

    # Names are dotted below the package ("binlog.format" is beanstalk_py/binlog/format.py).
    paths = [f"{PACKAGE}/{name.replace('.', '/')}.py" for name in hot_modules()]
    say(f"compiling {len(paths)} modules with mypyc")
    try:
        return list(mypycify(paths, opt_level="3", debug_level="0"))
    except (Exception, SystemExit) as exc:  # mypyc reports type errors by exiting
        say(f"pure Python (mypyc failed: {exc!r})")
        return []


class BuildExtOrPure(build_ext):
    """Build the compiled modules, or fall back to the pure ones if the C build fails."""

    def run(self) -> None:
        if not self.extensions:
            return
        try:
            super().run()
        except Exception as exc:  # CompileError, LinkError, a compiler that died
            for path in self.get_outputs():
                if os.path.exists(path):
                    os.remove(path)
            say(f"pure Python (the C build failed: {exc})")
            return
        say(f"compiled with mypyc: {', '.join(hot_modules())}")


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": BuildExtOrPure})
