"""Dotted paths into a JSON answer ("_embedded.vwApiCurrentPremiseList", "links.next", "$")."""
from __future__ import annotations

from typing import Any


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def lookup(document: Any, path: str) -> Any:
    """The value at ``path`` ("$" is the document itself; a number indexes a list), or MISSING."""
    if path == "$":
        return document
    node = document
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part, MISSING)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node
