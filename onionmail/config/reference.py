"""The configuration reference, written from the typed sections themselves.

Every key of ``onionmail.toml`` and ``gateway.toml`` is a field of a frozen
dataclass with a docstring (:mod:`onionmail.config.sections`). This module
renders those fields, their types, defaults and docstrings as Markdown, so
the reference in the documentation cannot drift from the code.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from typing import Any


def field_docs(cls: type[Any]) -> dict[str, str]:
    """The docstring under each field of ``cls`` and its bases (the nearest wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def toml_value(value: Any) -> str:
    """A default as it would be written in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '""' if not value else f'"{value}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{ ... }"
    return repr(value)


def _default(item: dataclasses.Field[Any]) -> str:
    if item.default is not dataclasses.MISSING:
        return toml_value(item.default)
    if item.default_factory is not dataclasses.MISSING:
        return toml_value(item.default_factory())
    return "(required)"


def section_markdown(name: str, cls: type[Any]) -> str:
    """One ``[name]`` section: its docstring, then a heading per key."""
    docs = field_docs(cls)
    summary = inspect.cleandoc(cls.__doc__ or "").removeprefix(f"[{name}]:").strip()
    lines = [f"### `[{name}]`", "", summary, ""]
    for item in dataclasses.fields(cls):
        lines += [
            f"#### `{item.name}`",
            "",
            f"Type `{item.type}`, default `{_default(item)}`.",
            "",
        ]
        if item.name in docs:
            lines += [docs[item.name], ""]
    return "\n".join(lines)


def file_markdown(title: str, intro: str, config_class: type[Any]) -> str:
    """Every section of one configuration file, in the order of its dataclass."""
    parts = [f"## {title}", "", intro, ""]
    for item in dataclasses.fields(config_class):
        if item.name == "path":
            continue
        section = item.default_factory  # each section field defaults to its class
        if isinstance(section, type):
            parts.append(section_markdown(item.name, section))
    return "\n".join(parts)
