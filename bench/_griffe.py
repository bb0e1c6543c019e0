"""griffe extensions for the docs site's API reference (``extensions:`` in mkdocs.yml).

* :class:`DoctestsAsCode` - distkit's docstrings are written for ``help()`` and doctest: ``>>>`` examples and
  Sphinx roles such as ``:class:`Locks```. In Markdown the first would read as running text (``[...]`` even as a
  link) and the second as a stray ``:class:``; each doctest run becomes a ```` ```pycon ```` block and each role
  inline code.
* :class:`LazyExports` - a package re-exports some names lazily (``__getattr__ = lazy_getattr(__name__, {name:
  module})``, so importing it needs no extra); griffe reads source and cannot follow that, so each exported name
  the mapping names becomes an alias of ``module.name`` and is documented like the others.

The source is not changed; only what griffe hands to mkdocstrings.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from griffe import Alias, Extension

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|exc|data|obj|const):`(~?)([^`]+)`")
_DOCTEST_FLAG = re.compile(r"\s*#\s*doctest:.*$")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


def markdown_docstring(text: str) -> str:
    """``text`` with doctest runs fenced as ```pycon (doctest flags dropped) and Sphinx roles as inline code."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(_DOCTEST_FLAG.sub("", lines[i]).rstrip())
                i += 1
            out.append(f"{indent}```")
            continue
        out.append(_ROLE.sub(_role, line))
        i += 1
    return "\n".join(out)


class DoctestsAsCode(Extension):
    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)


def lazy_targets(source: str) -> dict[str, str]:
    """``{name: module}`` from ``lazy_getattr(__name__, <dict literal or module-level dict name>)`` in ``source``."""
    tree = ast.parse(source)
    dicts: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            dicts[node.targets[0].id] = node.value
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_getattr" and len(node.args) > 1):
            continue
        mapping = node.args[1]
        if isinstance(mapping, ast.Name):
            mapping = dicts.get(mapping.id, mapping)
        if isinstance(mapping, ast.Dict):
            for key, value in zip(mapping.keys, mapping.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                    out[str(key.value)] = str(value.value)
    return out


class LazyExports(Extension):
    def on_module(self, *, mod: Any, **kwargs: Any) -> None:
        if not isinstance(mod.filepath, Path) or "lazy_getattr" not in mod.filepath.read_text("utf-8"):
            return
        exports = {e if isinstance(e, str) else e.name for e in (mod.exports or ())}
        for name, module in lazy_targets(mod.filepath.read_text("utf-8")).items():
            if name in exports and name not in mod.members:
                mod.set_member(name, Alias(name, f"{module}.{name}", parent=mod))
