"""Documentation blocks generated from the checkout's files rather than from the results.

``layout PKG``: the module tree of a package (``src/syre``): per folder its files and lines, per module
its line count and the first paragraph of its docstring, read with ``ast`` (nothing is imported).
``pages GLOB``: the markdown pages matching a glob beside the document's folder (``README_*.md``),
each linked under its title. ``syre bench docs`` refreshes both with the result blocks, and its
check fails when a module or a page was added, removed, resized or re-described since.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Callable, Dict, List

__all__ = ["TREE_BLOCKS", "module_summary", "layout", "pages"]


def module_summary(path: Path) -> str:
    """The first paragraph of a module's docstring on one line (empty when it has none)."""
    doc = ast.get_docstring(ast.parse(path.read_text(), filename=str(path))) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def _reading_order(p: Path):
    """``__init__.py`` first, then the public modules, then the private ones."""
    return (p.name != "__init__.py", p.name.startswith("_"), p.name)


def _folders(pkg: Path) -> List[Path]:
    """The package and every subpackage below it (a folder with an ``__init__.py``), the package first."""
    subs = sorted(p.parent for p in pkg.rglob("__init__.py") if p.parent != pkg and "__pycache__" not in p.parts)
    return [pkg] + subs


def layout(root: Path, args: str) -> str:
    """``layout PKG``: the module tree of ``PKG`` (relative to ``root``): a table of folders, then a list per folder."""
    pkg = Path(root) / (args.strip() or "src/syre")
    if not (pkg / "__init__.py").is_file():
        raise ValueError(f"Invalid layout block: {args.strip()!r} is not a package (no __init__.py under {pkg})")
    name = pkg.name
    folders = _folders(pkg)
    mods = {f: sorted(f.glob("*.py"), key=_reading_order) for f in folders}
    size = {p: _lines(p) for ps in mods.values() for p in ps}
    total = sum(size.values())
    rows = ["| folder | modules | lines |", "|---|---|---|"]
    for f in folders:
        label = ".".join((name,) + f.relative_to(pkg).parts)
        rows.append(f"| `{label}` | {len(mods[f])} | {sum(size[p] for p in mods[f]):,} |")
    rows.append(f"| all | {len(size)} | {total:,} |")
    out = ["\n".join(rows), ""]
    for f in folders:
        label = ".".join((name,) + f.relative_to(pkg).parts)
        out.append(f"## `{label}`: {len(mods[f])} modules, {sum(size[p] for p in mods[f]):,} lines")
        out.append("")
        for p in mods[f]:
            what = module_summary(p)
            out.append(f"- `{p.name}` ({size[p]:,} line{'s' if size[p] != 1 else ''})" + (f": {what}" if what else ""))
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def pages(root: Path, args: str, doc: Path) -> str:
    """``pages GLOB``: the pages matching ``GLOB`` in the document's folder, each linked under its first heading."""
    found = sorted(doc.parent.glob(args.strip() or "README_*.md"),
                   key=lambda p: ([int(n) for n in re.findall(r"\d+", p.name)], p.name))  # e6_e9 before e10_e13
    if not found:
        return "(no pages yet)\n"
    out = []
    for p in found:
        title = next((ln.lstrip("#").strip() for ln in p.read_text().splitlines() if ln.startswith("# ")), p.stem)
        out.append(f"- [{p.name}]({p.name}): {title}")
    return "\n".join(out) + "\n"


#: name -> generator(root, args, document path) -> markdown.
TREE_BLOCKS: Dict[str, Callable[[Path, str, Path], str]] = {
    "layout": lambda root, args, doc: layout(root, args),
    "pages": pages,
}
