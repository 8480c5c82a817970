"""The documentation a person reads: the README as a landing page whose short answer agrees with the committed
results, links that resolve, generated text wrapped without changing what it says, and the generated layout."""
import json
import re
from pathlib import Path

import pytest

from syre.bench.doc_tree import layout, module_summary, pages
from syre.bench.docs import _STARTS_BLOCK, WIDTH, blocks_in, documents, load, render, wrap
from syre.bench.heldout import verdict as heldout_verdict
from syre.core._checks import DECAY_WEAK

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: Every markdown page a person reads in the checkout (the run artifacts under benchmarks/results included).
PAGES = sorted({README, ROOT / "CHANGELOG.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("benchmarks/*.md"),
                *ROOT.glob("benchmarks/results/*/results.md")} - set(ROOT.glob("docs/_build/**/*.md")))
_LINK = re.compile(r"(!?)\[[^\]]*\]\(([^)\s]+)\)")
_CODE = re.compile(r"^(```|~~~).*?^\1[^\n]*$|``.+?``|`[^`]+`", re.S | re.M)


# ----------------------------------------------------------------------------- links
def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set:
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", path.read_text(), flags=re.S | re.M)  # code blocks have no headings
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def links(path: Path):
    """(is an image, target) of every markdown link in ``path`` outside code."""
    return [(bool(m.group(1)), m.group(2)) for m in _LINK.finditer(_CODE.sub("", path.read_text()))]


def broken(path: Path, root: Path = ROOT) -> list:
    """The relative links of ``path`` whose file, or whose heading in a markdown file, does not exist."""
    bad = []
    for _, target in links(path):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{path.relative_to(root)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{path.relative_to(root)}: {target} (no heading with that anchor)")
    return bad


def test_every_relative_link_resolves():
    assert README in PAGES and ROOT / "docs" / "evidence.md" in PAGES and len(PAGES) > 20
    bad = [b for p in PAGES for b in broken(p)]
    assert not bad, "\n".join(bad)


def test_the_link_check_notices_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "a.md").write_text("# A page\n\n## Its part\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#its-part) [gone](c.md) [typo](a.md#its-prt) [self](#b) `[code](x.md)`\n\n# B\n")
    assert broken(page, tmp_path) == ["b.md: c.md (no such file)", "b.md: a.md#its-prt (no heading with that anchor)"]


def test_the_built_pages_link_only_inside_docs():
    """Sphinx resolves a link only inside its source folder: a docs page names a file outside it as a path."""
    docs = (ROOT / "docs").resolve()
    for page in ROOT.glob("docs/**/*.md"):
        for image, target in links(page):
            if image or re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            dest = (page.parent / target.partition("#")[0]).resolve()
            assert docs in dest.parents, f"{page.relative_to(ROOT)}: {target} leaves docs/ (name it as a path)"


# ----------------------------------------------------------------------------- the README
def test_the_readme_is_a_landing_page():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) < 200 and max(map(len, lines)) <= 400
    assert not blocks_in(text), "generated results live in docs/ and benchmarks/, linked from the README"
    pages_linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in links(README)}
    unlinked = [p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/**/*.md")
                if p.name != "index.md" and "_build" not in p.parts and p.resolve() not in pages_linked]
    assert not unlinked, f"docs pages not linked from the README: {unlinked}"


def test_the_readmes_two_commands_are_the_makefiles():
    text = README.read_text()
    block = re.search(r"## Two commands\n\n```bash\n(.*?)```", text, re.S).group(1)
    assert [ln.split("#")[0].strip() for ln in block.splitlines()] == ["make demo", "make test"]
    make = (ROOT / "Makefile").read_text()
    recipe = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+): .*\n((?:\t.*\n)+)", make, re.M)}
    assert "bin/syre demo" in recipe["demo"] and "-m pytest" in recipe["test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _held_out(S):
    """Per collapse cell of the held-out experiments: (rank test, performance test, L2-Init mean, syre mean)."""
    out = []
    for i in _heldout_ids(S):
        s = S[i]
        for r in s["tests"]:
            rank = "above weight decay's at the collapsing gamma" in r["name"]
            if r["family"] == "heldout" and r["role"] == "primary" and rank:
                perf = next(t for t in s["tests"] if t["family"] == "heldout" and t["a"] == r["a"] and t["b"] == r["b"]
                            and t["metric"] != r["metric"])
                l2 = s["arms"].get(r["a"].replace("syre", "l2init", 1), {}).get(perf["metric"])
                out.append((r, perf, l2 and l2["mean"], s["arms"][r["a"]][perf["metric"]]["mean"]))
    return out


def _heldout_ids(S):
    return heldout_verdict([S[i] for i in S])["experiments"]


def test_the_readmes_short_answer_agrees_with_the_committed_results():
    """Each sentence of "Does it help? The short answer", checked against what the committed results say."""
    text = " ".join(README.read_text().split())
    S = load(ROOT)
    if not S:
        pytest.skip("no committed benchmark results")
    # "At the weight decay most recipes use, it changes little": the typical settings are below DECAY_WEAK, and the
    # default study found no harm at its typical decays.
    assert "At the weight decay most recipes use, it changes little." in text
    typical = json.loads((ROOT / "benchmarks/results/pull-numbers/pull_numbers.json").read_text())["typical"]
    assert "AdamW's 0.1 on a nanoGPT-style character LM" in text and typical["nanogpt_char_lm"]["decay"] < DECAY_WEAK
    assert "SGD's 5e-4 on a BatchNorm ResNet" in text and typical["resnet_batchnorm"]["decay"] < DECAY_WEAK
    study = S["default-scale"]
    typical_tests = [t for t in study["tests"] if "(typical)" in t["name"] and t["role"] == "primary"]
    assert len(typical_tests) >= 3 and all(t["passed"] for t in typical_tests)
    cells = _held_out(S)
    assert len(cells) >= 5
    # "restored the rank in every benchmark that measured it, but not the accuracy in every one"
    assert "restored the rank in every benchmark that measured it, but not the accuracy in every one" in text
    assert all(r["mean_a"] > r["mean_b"] for r, _, _, _ in cells)
    worse = [p for _, p, _, _ in cells if (p["mean_a"] < p["mean_b"]) != (p["direction"] == "less")]
    assert worse, "syre's accuracy beat weight decay's in every collapse cell: the README undersells it"
    # "with every method at its own tuned decay, it was not significantly better than every tuned baseline in any"
    assert "it was not significantly better than every tuned baseline in any benchmark" in text
    tuned = [s.get("supported_tuned") for s in S.values() if s["protocol"]["declaration"].get("tuning")]
    assert tuned and True not in tuned and False in tuned
    # "L2-Init ... had the better mean in about half of them"
    assert "had the better mean in about half of them" in text
    l2_better = [(l2 < syre) == (p["direction"] == "less") for _, p, l2, syre in cells if l2 is not None and l2 != syre]
    assert len(l2_better) >= 5 and 0.35 <= sum(l2_better) / len(l2_better) <= 0.65
    # the plasticity stream (E14): the loss of no decay, syre against each tuned rival on both task metrics
    e14 = S["e14"]
    loss = e14["plasticity_loss"]
    assert f"plain training lost {round(100 * loss)} points of accuracy" in text
    tuned14 = {(t["b"].split("@")[0], t["metric"]): t for t in e14["tests"] if t["family"] == "tuned" and t["role"] == "primary"}
    assert "beat the tuned weight decay, weight decay + LayerNorm and shrink-and-perturb on both task metrics" in text
    assert all(tuned14[(r, m)]["passed"] for r in ("wd", "wd_ln", "sp") for m in ("acc_last", "acc_online"))
    assert "but not L2-Init, which tied on late-task accuracy and did better on online accuracy" in text
    late, online = tuned14[("l2init", "acc_last")], tuned14[("l2init", "acc_online")]
    assert late["passed"] is False and abs(late["mean_a"] - late["mean_b"]) < 0.01
    assert online["passed"] is False and online["mean_a"] < online["mean_b"]


# ----------------------------------------------------------------------------- generated text
def test_generated_prose_is_wrapped_in_every_document():
    """Prose lines of every generated block are at most WIDTH characters (a single word may not be broken); table rows
    are left whole, their cells are the block generators' to keep short."""
    long = []
    for rel in documents(ROOT):
        for name, args, body in blocks_in((ROOT / rel).read_text()):
            for ln in body.splitlines():
                if not ln.lstrip().startswith("|") and len(ln) > WIDTH and " " in ln.strip():
                    long.append(f"{rel}: {name} {args}: {len(ln)} characters")
    assert not long, long


def test_wrap_reflows_without_changing_the_words_or_the_blocks():
    words = [f"w{i}" for i in range(200)]
    for k, w in ((9, "-"), (19, "1."), (29, "#"), (39, "|x|"), (49, ">"), (59, "="), (69, "+")):
        words[k] = w  # at a line start each would begin a list, a heading, a table row, a quote, a setext heading
    item = "  - " + " ".join(words)
    para = " ".join(reversed(words))
    table = "| a | " + "b " * 100 + "|"
    code = "```\n" + "x " * 100 + "\n```"
    text = "\n\n".join([item, para, table, code]) + "\n"
    for width in (40, 47, 60, 61, 80):
        out = wrap(text, width)
        assert out.split() == text.split()  # the same words in the same order: markdown re-flows them as before
        assert table in out and code in out  # tables and code are left whole
        lines = out.split("\n")
        item_lines = lines[:lines.index("")]
        assert item_lines[0].startswith("  - ")
        assert all(ln.startswith("    ") for ln in item_lines[1:])  # the item's lines stay in the item
        prose = item_lines[1:] + lines[len(item_lines) + 1:lines.index(table) - 1]
        assert len(prose) > 10
        for ln in prose:
            assert not _STARTS_BLOCK.fullmatch(ln.split()[0]), ln  # no continuation line opens a new block
            assert len(ln) <= width, ln
        assert wrap(out, width) == out  # wrapping is idempotent


def test_the_committed_blocks_render_as_their_unwrapped_text():
    """Rendered to HTML, every committed generated block reads the same as the generator's unwrapped text."""
    markdown_it = pytest.importorskip("markdown_it")
    from syre.bench.doc_blocks import BLOCKS

    md = markdown_it.MarkdownIt("commonmark").enable("table")
    S = load(ROOT)
    seen = 0
    for rel in documents(ROOT):
        for name, args, body in blocks_in((ROOT / rel).read_text()):
            if name not in BLOCKS:
                continue
            try:
                raw = BLOCKS[name](S, args)
            except (KeyError, StopIteration):
                continue
            assert " ".join(md.render(body).split()) == " ".join(md.render(raw).split()), f"{rel}: {name} {args}"
            seen += 1
    assert seen > 20


# ----------------------------------------------------------------------------- the layout page
def _package(root: Path) -> Path:
    pkg = root / "src" / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""The package."""\n')
    (pkg / "core.py").write_text('"""Core: the\nfirst paragraph.\n\nMore detail."""\nX = 1\nY = 2\n')
    (pkg / "_private.py").write_text("Z = 3\n")
    (pkg / "sub" / "__init__.py").write_text('"""A subpackage."""\n')
    (pkg / "sub" / "leaf.py").write_text('"""A leaf."""\n' + "pass\n" * 9)
    return pkg


def test_layout_lists_every_module_with_its_summary(tmp_path):
    pkg = _package(tmp_path)
    text = layout(tmp_path, "src/pkg")
    assert "| `pkg` | 3 |" in text and "| `pkg.sub` | 2 |" in text and "| all | 5 |" in text
    assert "- `core.py`: Core: the first paragraph." in text and "More detail" not in text
    assert "- `_private.py`\n" in text and "- `leaf.py`: A leaf." in text
    (pkg / "sub" / "leaf.py").write_text('"""A leaf."""\n' + "pass\n" * 20)  # a module that grew: the same page
    assert layout(tmp_path, "src/pkg") == text
    assert text.index("`__init__.py`") < text.index("`core.py`") < text.index("`_private.py`")  # public before private
    assert module_summary(pkg / "_private.py") == ""
    doc = tmp_path / "layout.md"
    doc.write_text("<!-- bench:begin layout src/pkg -->\n<!-- bench:end layout -->\n")
    once = render(doc.read_text(), {}, tmp_path, doc)
    assert render(once, {}, tmp_path, doc) == once
    (pkg / "sub" / "new.py").write_text('"""Added later."""\n')  # a module added, or moved, changes the page
    again = render(once, {}, tmp_path, doc)
    assert again != once and "`new.py`: Added later." in again
    with pytest.raises(ValueError, match="not a package"):
        layout(tmp_path, "src")


def test_the_layout_page_is_the_package_as_it_is():
    doc = ROOT / "docs" / "layout.md"
    text = doc.read_text()
    assert [n for n, _, _ in blocks_in(text)] == ["layout"]
    assert render(text, {}, ROOT, doc) == text, "docs/layout.md is stale: run `syre bench docs`"
    for p in (ROOT / "src" / "syre").rglob("*.py"):
        assert f"- `{p.name}`" in text, p


def test_pages_lists_the_benchmark_pages_in_their_number_order(tmp_path):
    named = (("README_e14.md", "E14: x"), ("README_e10_e13.md", "E10-E13: y"), ("README_e6_e9.md", "E6 to E9: z"))
    for name, title in named:
        (tmp_path / name).write_text(f"# {title}\n\ntext\n")
    doc = tmp_path / "README.md"
    assert pages(tmp_path, "README_*.md", doc).splitlines() == [
        "- [README_e6_e9.md](README_e6_e9.md): E6 to E9: z", "- [README_e10_e13.md](README_e10_e13.md): E10-E13: y",
        "- [README_e14.md](README_e14.md): E14: x"]
