"""The generated text of the documentation: results from the committed ``summary.json`` files, and the tree.

Every sentence or table in ``README.md``, ``benchmarks/README*.md`` and ``docs/*.md`` (the globs of
``DOCS``) that states a result sits in a block::

    <!-- bench:begin NAME ARGS -->
    ... generated ...
    <!-- bench:end NAME -->

``write(root)`` regenerates every block (``syre bench docs``); ``check(root)`` lists the blocks whose
committed text differs (``syre bench docs --check``, and a test). Outside the blocks the documents state
no result. Result blocks: ``doc_blocks.BLOCKS`` (from the summaries); blocks from the checkout's files
(the module tree, the list of benchmark pages): ``doc_tree.TREE_BLOCKS``. Generated prose is wrapped
at ``WIDTH`` characters (a markdown paragraph re-flows, so the rendering does not change); table rows
and code are left whole.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from .doc_blocks import BLOCKS
from .doc_tree import TREE_BLOCKS

__all__ = ["DOCS", "BLOCKS", "TREE_BLOCKS", "WIDTH", "documents", "load", "render", "wrap", "write", "check",
           "blocks_in"]

#: The documents scanned for blocks: globs relative to the checkout.
DOCS = ("README.md", "benchmarks/README*.md", "docs/*.md")
RESULTS = "benchmarks/results"
#: The longest line of generated prose.
WIDTH = 120
_BLOCK = re.compile(r"<!-- bench:begin (\S+)([^>]*?) -->\n(.*?)<!-- bench:end \1 -->", re.S)
_PREFIX = re.compile(r"\s*(?:[-*+]|\d+[.)])\s+|\s*")  # a list item's marker, or the indentation
# A line that starts with one of these would begin a new markdown block (a list, a heading, a quote, a table row, ...).
_STARTS_BLOCK = re.compile(r"[-*+]|\d{1,9}[.)]|#{1,6}|[>|<].*|```.*|~~~.*")


def documents(root: Path) -> List[str]:
    """The documents of ``DOCS`` in this checkout, relative paths in order."""
    root = Path(root)
    out: List[str] = []
    for pattern in DOCS:
        for p in sorted(root.glob(pattern)):
            rel = p.relative_to(root).as_posix()
            if rel not in out:
                out.append(rel)
    return out


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


def _wrap_line(line: str, width: int) -> List[str]:
    prefix = _PREFIX.match(line).group(0)
    indent = " " * len(prefix)
    words = line[len(prefix):].split(" ")

    def may_break(k: int) -> bool:  # before words[k]: not before a block marker, not inside "p = 0.01"
        if k >= len(words):
            return True
        return bool(words[k]) and not _STARTS_BLOCK.fullmatch(words[k]) and words[k - 1] not in ("=", "<", ">")

    out, head, i = [], prefix, 0
    while i < len(words):
        j, length = i + 1, len(head) + len(words[i])
        while j < len(words) and length + 1 + len(words[j]) <= width:
            length += 1 + len(words[j])
            j += 1
        k = j
        while k > i + 1 and not may_break(k):  # the last break that fits ...
            k -= 1
        if not may_break(k):  # ... or, when none does, the first one after
            k = j
            while not may_break(k):
                k += 1
        out.append(head + " ".join(words[i:k]))
        head, i = indent, k
    return out


def wrap(body: str, width: int = WIDTH) -> str:
    """Markdown with every prose line longer than ``width`` broken at spaces (list items keep their indentation).

    Code fences, table rows, headings and HTML comments are left whole, and no line is broken before a word
    that would start a new markdown block, so the text renders as before."""
    out, fence = [], False
    for line in body.split("\n"):
        s = line.lstrip()
        if s.startswith(("```", "~~~")):
            fence = not fence
        if fence or s.startswith(("```", "~~~", "|", "#", "<!--")) or len(line) <= width:
            out.append(line)
        else:
            out.extend(_wrap_line(line, width))
    return "\n".join(out)


def render(text: str, S: Dict[str, Any], root: Optional[Path] = None, doc: Optional[Path] = None) -> str:
    """``text`` with every block regenerated: result blocks from ``S``, tree blocks from the files under ``root``
    (``doc``: the document's path, for blocks that read beside it)."""
    def sub(m):
        name, args = m.group(1), m.group(2).strip()
        if name in TREE_BLOCKS:
            if root is None:
                raise ValueError(f"Invalid block: {name!r} reads the checkout; render it with root=")
            body = TREE_BLOCKS[name](Path(root), args, Path(doc) if doc is not None else Path(root) / "README.md")
        elif name not in BLOCKS:
            raise ValueError(f"Invalid block: {name!r}; expected one of {sorted(BLOCKS) + sorted(TREE_BLOCKS)}")
        else:
            try:
                body = BLOCKS[name](S, args)
            except (KeyError, StopIteration):  # a summary the block needs is not committed yet
                body = "(no committed results for this block yet)\n"
        return f"<!-- bench:begin {name}{' ' + args if args else ''} -->\n{wrap(body)}<!-- bench:end {name} -->"

    return _BLOCK.sub(sub, text)


def write(root: Path) -> List[Path]:
    S = load(root)
    changed = []
    for rel in documents(root):
        path = Path(root) / rel
        text = path.read_text()
        new = render(text, S, root, path)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def check(root: Path, summaries: Optional[Dict[str, Any]] = None) -> List[str]:
    """``file: block args`` for every block whose text differs from what the summaries and the checkout generate."""
    S = load(root) if summaries is None else summaries
    bad = []
    for rel in documents(root):
        path = Path(root) / rel
        text = path.read_text()
        for (name, args, body), (_, _, want) in zip(blocks_in(text), blocks_in(render(text, S, root, path))):
            if body != want:
                bad.append(f"{rel}: {name} {args}".strip())
    return bad
