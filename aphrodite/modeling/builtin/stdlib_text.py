"""Docstrings of pure-Python standard library modules, as plain English training and held-out text.

The Python standard library is distributed under the PSF License Agreement (version 2), which allows
copying and redistribution. The text is read from the running interpreter's source files with ``ast``
(nothing is imported or executed), so it follows the Python version used to build the corpus.
"""

from __future__ import annotations

import ast
import sysconfig
import unicodedata
from pathlib import Path

TRAIN_MODULES = (
    "abc", "argparse", "ast", "base64", "bisect", "calendar", "cmd", "codecs", "collections", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis", "enum",
    "filecmp", "fileinput", "fnmatch", "ftplib", "functools", "getopt", "gettext", "glob", "gzip",
    "heapq", "hmac", "html", "http.client", "http.server", "imaplib", "inspect", "ipaddress", "json",
    "locale", "logging", "mailbox", "mimetypes", "netrc", "numbers", "operator", "optparse", "os",
    "pathlib", "pickle", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shutil",
    "smtplib", "socket", "socketserver", "statistics", "string", "subprocess", "tarfile", "tempfile",
    "threading", "timeit", "tokenize", "traceback", "turtle", "typing", "unittest.case", "urllib.parse",
    "urllib.request", "uuid", "warnings", "weakref", "zipfile",
)
"""Modules whose docstrings are training text."""

HELDOUT_MODULES = ("textwrap", "fractions", "colorsys", "shlex", "graphlib", "wave")
"""Modules whose docstrings are held out for evaluation; never in the training text."""


def _source(module: str) -> str:
    # Found by path, not importlib: some modules (abc, os) are frozen and have no origin file.
    base = Path(sysconfig.get_paths()["stdlib"]).joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise ValueError(f"no Python source for standard library module {module!r} under {base.parent}")


def _usable(doc: str, min_chars: int) -> bool:
    # Keep prose; skip one-liners and docstrings with non-Latin text, which would waste vocabulary.
    return len(doc) >= min_chars and all(unicodedata.category(c)[0] != "L" or c.isascii() for c in doc)


def module_docstrings(module: str, min_chars: int = 60, max_chars: int = 2000) -> list[str]:
    """Docstrings of ``module`` and its classes and functions, each headed by its dotted name."""
    tree = ast.parse(_source(module))
    found: list[tuple[str, str]] = []
    if doc := ast.get_docstring(tree):
        found.append((module, doc))
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if (doc := ast.get_docstring(node)) and not node.name.startswith("_"):
                found.append((f"{module}.{node.name}", doc))
    return [f"{name}\n\n{doc[:max_chars]}" for name, doc in found if _usable(doc, min_chars)]


def docstrings(modules: tuple[str, ...], **kwargs: int) -> list[str]:
    """Docstrings of every module in ``modules``, in a fixed order."""
    return [doc for module in modules for doc in module_docstrings(module, **kwargs)]
