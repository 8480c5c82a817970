"""The results text of the documentation, generated from the committed ``summary.json`` files.

Every sentence or table in ``README.md``, ``benchmarks/README*.md`` and ``docs/defaults.md`` that
states a result sits in a block::

    <!-- bench:begin NAME ARGS -->
    ... generated ...
    <!-- bench:end NAME -->

``write(root)`` regenerates every block from ``benchmarks/results/*/summary.json`` (``syre bench
docs``); ``check(root)`` lists the blocks whose committed text differs (``syre bench docs --check``,
and a test). Outside the blocks the documents state no result. Block generators: ``doc_blocks.BLOCKS``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from .doc_blocks import BLOCKS

__all__ = ["DOCS", "BLOCKS", "load", "render", "write", "check", "blocks_in"]

DOCS = ("README.md", "benchmarks/README.md", "benchmarks/README_e6_e9.md", "benchmarks/README_e10_e13.md", "benchmarks/README_e14.md", "docs/defaults.md")
RESULTS = "benchmarks/results"
_BLOCK = re.compile(r"<!-- bench:begin (\S+)([^>]*?) -->\n(.*?)<!-- bench:end \1 -->", re.S)


def _id_order(f: Path):
    """e2 before e10: experiments in their number's order, anything else after them by name."""
    m = re.fullmatch(r"e(\d+)", f.parent.name)
    return (0, int(m.group(1)), "") if m else (1, 0, f.parent.name)


def load(root: Path) -> Dict[str, Dict[str, Any]]:
    out = {}
    for f in sorted((Path(root) / RESULTS).glob("*/summary.json"), key=_id_order):
        s = json.loads(f.read_text())
        if "protocol" in s:  # a registered run (not a script's summary such as pull-numbers)
            out[s["experiment"]] = s
    return out


def blocks_in(text: str) -> List[tuple]:
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in _BLOCK.finditer(text)]


def render(text: str, S: Dict[str, Any]) -> str:
    def sub(m):
        name, args = m.group(1), m.group(2).strip()
        if name not in BLOCKS:
            raise ValueError(f"Invalid block: {name!r}; expected one of {sorted(BLOCKS)}")
        try:
            body = BLOCKS[name](S, args)
        except (KeyError, StopIteration):  # a summary the block needs is not committed yet
            body = "(no committed results for this block yet)\n"
        return f"<!-- bench:begin {name}{' ' + args if args else ''} -->\n{body}<!-- bench:end {name} -->"

    return _BLOCK.sub(sub, text)


def write(root: Path) -> List[Path]:
    S = load(root)
    changed = []
    for rel in DOCS:
        path = Path(root) / rel
        text = path.read_text()
        new = render(text, S)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def check(root: Path, summaries: Optional[Dict[str, Any]] = None) -> List[str]:
    """``file: block args`` for every block whose text differs from what the summaries generate."""
    S = load(root) if summaries is None else summaries
    bad = []
    for rel in DOCS:
        text = (Path(root) / rel).read_text()
        for (name, args, body), (_, _, want) in zip(blocks_in(text), blocks_in(render(text, S))):
            if body != want:
                bad.append(f"{rel}: {name} {args}".strip())
    return bad
