"""Generate argparse flags from config dataclasses, so a flag, its default and its help have one source.

Each field's help text is the string literal written directly under it (an attribute docstring), read
with ``ast`` as vLLM does. A field becomes ``--<prefix><field-name-with-dashes>`` unless ``flag_names``
renames it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import typing
from typing import Any


def field_docs(cls: type) -> dict[str, str]:
    """Map each dataclass field to the docstring written under it."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for prev, node in zip(body, body[1:]):
            if (isinstance(prev, ast.AnnAssign) and isinstance(prev.target, ast.Name)
                    and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)):
                docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def _base_type(annotation: Any) -> tuple[type, bool]:
    """Return (scalar type, optional) for annotations like ``int``, ``float | None``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _base_type(non_none[0])[0], True
    if origin is typing.Literal:
        return type(args[0]), False
    if origin is list:  # a repeatable flag: the element type
        return args[0] if args and isinstance(args[0], type) else str, False
    return annotation if isinstance(annotation, type) else str, False


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, *, title: str | None = None,
                       prefix: str = "", flag_names: dict[str, str] | None = None,
                       skip: tuple[str, ...] = ()) -> argparse._ArgumentGroup:
    """Add one argument group holding a flag per field of dataclass ``cls``."""
    flag_names = flag_names or {}
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title or cls.__name__, (cls.__doc__ or "").strip().split("\n")[0])
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        flag = flag_names.get(f.name, "--" + prefix + f.name.replace("_", "-"))
        typ, _ = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        help_text = docs.get(f.name, "")
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": f"{help_text} (default: {default})"}
        choices = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is typing.Literal else None
        if typ is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hints[f.name]) is list:  # argparse copies the default before appending
            kwargs.update(action="append", type=typ)
        else:
            kwargs["type"] = typ
            if choices:
                kwargs["choices"] = choices
        group.add_argument(flag, **kwargs)
    return group


def dataclass_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build ``cls`` from the parsed flags that ``add_dataclass_args`` added."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
              if f.init and hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)
