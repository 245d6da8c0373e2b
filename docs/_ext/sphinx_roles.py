"""A griffe extension for the API reference: Sphinx roles in docstrings become Markdown.

The docstrings use Sphinx roles (``:class:`~agentops_async.AsyncClient```, ``:meth:`end```), which
mkdocstrings would show as raw text. At docs build time (the source is untouched) a role whose
target is a public, fully qualified name becomes a cross-reference that ``mkdocs build --strict``
checks (``[`AsyncClient`][agentops_async.AsyncClient]``); any other role (a private module, a
name relative to its class) becomes inline code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|data|attr|mod|exc|obj|const):`([^`]+)`")
_EXPLICIT = re.compile(r"^(?P<text>.+?)\s*<(?P<target>[^>]+)>$")


def _markdown(match: re.Match[str]) -> str:
    content = match.group(1).strip()
    explicit = _EXPLICIT.match(content)
    if explicit:
        text, target = explicit.group("text"), explicit.group("target")
    else:
        target = content.lstrip("~")
        text = target.rsplit(".", 1)[-1] if content.startswith("~") else target
    public = target.startswith("agentops_async.") and not any(
        part.startswith("_") for part in target.split(".")
    )
    return f"[`{text}`][{target}]" if public else f"`{text}`"


def roles_to_markdown(text: str) -> str:
    """Replace every Sphinx role in ``text`` by a cross-reference or inline code."""
    return _ROLE.sub(_markdown, text)


class SphinxRoles(griffe.Extension):
    """Rewrites the Sphinx roles of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = roles_to_markdown(obj.docstring.value)
