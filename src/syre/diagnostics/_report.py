"""What the audit returns: ``LayerReport`` per layer and the ``Report`` (table, findings, JSON, plot)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from . import _verdict
from ._plotting import figure


def _fmt_count(n: float) -> str:
    return f"{n:,.0f}"


@dataclass
class LayerReport:
    """One weight layer (or attention module, or recurrent layer) of the audit.

    Structure: ``next`` (the weight layers its units feed; empty when unpaired, ``stop`` says
    why), ``activation`` (the unit-wise ops in between), ``families`` (per mirror family: ``near``,
    ``count``, ``degree`` = near / count, ``min_distance`` relative to the layer's RMS unit norm).

    Units: ``duplicate_groups`` (groups of units equal within tolerance; units whose weights are
    all zero are dead, not duplicates), ``dead_units`` = ``zero_units`` | ``inactive_units``,
    ``low_rank_directions`` (near rotation mirrors beyond what the structure and the duplicated
    and dead units account for).

    Ranks, all counted at ``rtol`` of the top singular value: ``weight_rank`` of the weight as
    ``[out, in]`` and ``weight_max_rank`` (its structural maximum: ``min(out, in)``, and the rank of
    the input times the kernel size where that is smaller); ``input_rank`` (centred rank of the
    input the layer reads, None where the batch has no more rows than features; for an embedding,
    distinct ids - 1) and ``input_effective_rank`` (centred); ``representation``: ``dim``, ``rank`` (centred directions with a standard
    deviation of at least ``rtol`` of the top one), ``max_rank`` and ``max_rank_by`` (width, batch or
    input), ``numerical_rank``, ``effective_rank`` (uncentred, as ``metrics.effective_rank``),
    ``low_rank_fraction``, ``embedding_std`` (times sqrt(dim)).

    ``reference``: the same numbers for the layer freshly initialised, its ranks counted at
    ``REFERENCE_MARGIN`` (10) x ``rtol`` (the directions a fresh layer clearly has; None without a
    reference); ``weight_rank_clear`` and ``representation["rank_clear"]``: this layer's own ranks
    at that tolerance;
    ``evidence``: per rule of ``_verdict``, the numbers it compared and whether it flagged;
    ``collapse``: the flags (``duplicated``, ``dead``, ``low rank``). With a ``Syre`` object:
    ``anchor_distance``, ``param_norm``, ``anchor_norm``. ``analysis_s``: seconds on this layer.
    """

    name: str
    type: str
    shape: List[int]
    units: int
    next: List[str]
    activation: str
    stop: str
    families: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    duplicate_groups: List[List[int]] = field(default_factory=list)
    dead_units: List[int] = field(default_factory=list)
    zero_units: List[int] = field(default_factory=list)
    inactive_units: List[int] = field(default_factory=list)
    low_rank_directions: Optional[int] = None
    weight_rank: Optional[int] = None
    weight_rank_clear: Optional[int] = None
    weight_max_rank: Optional[int] = None
    weight_effective_rank: Optional[float] = None
    input_rank: Optional[int] = None
    input_effective_rank: Optional[float] = None
    representation: Dict[str, Any] = field(default_factory=dict)
    reference: Optional[Dict[str, Any]] = None
    evidence: Dict[str, Any] = field(default_factory=dict)
    anchor_distance: Optional[float] = None
    param_norm: Optional[float] = None
    anchor_norm: Optional[float] = None
    collapse: List[str] = field(default_factory=list)
    analysis_s: float = 0.0

    @property
    def duplicated(self) -> int:
        """Units in a duplicate group."""
        return sum(len(g) for g in self.duplicate_groups)

    def summary(self) -> Dict[str, Any]:
        """The numbers a reference layer contributes (see ``reference``): its ranks counted at
        ``REFERENCE_MARGIN`` x ``rtol``, the directions it clearly has."""
        r = self.representation
        return {"weight_rank": self.weight_rank_clear, "rank": r.get("rank_clear"), "effective_rank": r.get("effective_rank"),
                "input_rank": self.input_rank, "input_effective_rank": self.input_effective_rank, "duplicated": self.duplicated,
                "dead": len(self.dead_units),
                "zero": len(self.zero_units), "inactive": len(set(self.inactive_units) - set(self.zero_units)),
                "unused_directions": self.low_rank_directions}

    def to_dict(self) -> Dict[str, Any]:
        return {k: json_safe(v) for k, v in self.__dict__.items()}


def json_safe(v):
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, torch.Tensor):
        return json_safe(v.tolist())
    return v


def _ref(rep: LayerReport, key: str):
    return None if rep.reference is None else rep.reference.get(key)


def _upstream(rep: LayerReport) -> Optional[str]:
    """Why a representation may be low rank before this layer: its input already is, against the reference."""
    ri, re_ = _ref(rep, "input_rank"), _ref(rep, "input_effective_rank")
    if rep.input_rank is not None and ri and rep.input_rank < _verdict.RANK_SHARE * ri:
        return f"its input already has rank {rep.input_rank} (fresh init {ri}): collapsed upstream"
    if rep.input_effective_rank is not None and re_ and rep.input_effective_rank < _verdict.RANK_SHARE * re_:
        return (f"its input's effective rank is already {rep.input_effective_rank:.1f} (fresh init {re_:.1f}): "
                "collapsed upstream")
    return None


def _sentences(rep: LayerReport) -> tuple:
    """(findings, observations) of one layer: flagged states, and states within the reference."""
    found, seen = [], []
    ev = rep.evidence
    init = (lambda key: "" if rep.reference is None else f"; fresh init: {_ref(rep, key)}")
    if rep.duplicate_groups:
        g = len(rep.duplicate_groups)
        text = (f"{rep.name}: {rep.duplicated} of {rep.units} units duplicated in {g} group{'s' if g > 1 else ''} "
                f"(permutation mirrors{init('duplicated')})")
        (found if ev.get("duplicated", {}).get("flagged") else seen).append(text)
    if rep.dead_units:
        why = []
        if rep.zero_units:
            why.append(f"{len(rep.zero_units)} with zero weights")
        n_inactive = len(set(rep.inactive_units) - set(rep.zero_units))
        if n_inactive:
            why.append(f"{n_inactive} never active on the batch")
        text = f"{rep.name}: {len(rep.dead_units)} of {rep.units} units dead ({', '.join(why)}{init('dead')})"
        flagged = ev.get("zero", {}).get("flagged") or ev.get("inactive", {}).get("flagged")
        within = ": within what a fresh layer has" if rep.reference is not None else ": below the flagging threshold"
        (found if flagged else seen).append(text if flagged else text + within)
    if rep.low_rank_directions:
        text = (f"{rep.name}: {rep.low_rank_directions} of {rep.units} hidden directions unused (rotation mirrors"
                f"{init('unused_directions')})")
        (found if ev.get("rotation", {}).get("flagged") else seen).append(text)
    for key, what in (("weight rank", "weight"), ("representation rank", "representation")):
        e = ev.get(key)
        if not e or e["value"] >= e["could_have"]:
            continue
        ref = "" if e["reference"] is None else f", fresh init {e['reference']}"
        text = f"{rep.name}: {what} rank {e['value']} of a possible {e['could_have']} (max {e['max']}{ref})"
        if e["explained_by_units"]:
            text += f", {e['explained_by_units']} of the lost directions taken by duplicated/dead units"
        if e["flagged"]:
            text += f": below {_verdict.RANK_SHARE:.0%}"
            up = _upstream(rep) if what == "representation" else None
            found.append(text + (f"; {up}" if up else ""))
        elif e["value"] + e["explained_by_units"] < e["could_have"] - 1:
            seen.append(text)
    return found, seen


class Report:
    """The result of ``audit``: ``str(report)`` is a table, ``to_dict()`` is JSON-safe, ``plot(path)`` a PNG.

    ``layers``: a ``LayerReport`` per weight layer in forward order; ``anchors``: with a ``Syre``
    object, one row per parameter (``name``, ``distance`` = ``||p - theta0||``, ``norm`` =
    ``||p||``, ``anchor_norm`` = ``||theta0||``, ``covered``); ``findings``: one sentence per
    collapsed state found (what sets ``collapsed``); ``observations``: states present but within
    what the fresh-init reference and the structure allow; ``meta``: the model, batch, reference,
    tolerances and thresholds.
    """

    def __init__(self, layers: List[LayerReport], anchors: List[Dict[str, Any]], meta: Dict[str, Any]):
        self.layers = layers
        self.anchors = anchors
        self.meta = meta
        self.findings: List[str] = []
        self.observations: List[str] = []
        for rep in layers:
            f, o = _sentences(rep)
            self.findings += f
            self.observations += o

    def __getitem__(self, name: str) -> LayerReport:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"No layer {name!r} in this report; layers: {[rep.name for rep in self.layers]}")

    @property
    def collapsed(self) -> bool:
        """True when any layer is flagged duplicated, dead or low rank (see ``syre.diagnostics.audit``)."""
        return any(rep.collapse for rep in self.layers)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-safe dict: ``meta``, ``layers`` (one dict per layer), ``anchors``, ``findings``, ``observations``."""
        return {"meta": json_safe(self.meta), "layers": [rep.to_dict() for rep in self.layers],
                "anchors": json_safe(self.anchors), "findings": list(self.findings),
                "observations": list(self.observations), "collapsed": self.collapsed}

    def to_json(self, path=None, **kwargs) -> str:
        """``json.dumps(self.to_dict())``; written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=kwargs.pop("indent", 2), **kwargs)
        if path is not None:
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    def table(self) -> str:
        """The per-layer table of ``str(report)``; parentheses hold (structural maximum, fresh init)."""
        has_ref = any(rep.reference is not None for rep in self.layers)
        has_anchor = any(rep.anchor_distance is not None for rep in self.layers)
        init = " (init)" if has_ref else ""
        head = ["layer", "type", "units", "next", "act", "near mirrors (of family)", "dup" + init, "dead" + init,
                "rank W (max" + (", init)" if has_ref else ")"), "rep rank (max" + (", init)" if has_ref else ")"),
                "eff rank" + init, "collapse"]
        if has_anchor:
            head.append("|p-theta0|")

        def cell(value, *extra, fmt="{}"):
            if value is None:
                return "-"
            show = lambda v: "-" if v is None else fmt.format(v)  # noqa: E731
            return show(value) + (f" ({', '.join(show(v) for v in extra)})" if extra else "")

        rows = []
        for rep in self.layers:
            fams = []
            for f, d in rep.families.items():
                short = {"permutation": "perm", "sign": "sign", "rescaling": "resc", "rotation": "rot"}.get(f, f)
                fams.append(f"{short} {_fmt_count(d['near'])}/{_fmt_count(d['count'])}")
            r = rep.representation
            ref = (lambda key: (_ref(rep, key),)) if has_ref else (lambda key: ())  # noqa: E731
            row = [rep.name, rep.type, str(rep.units), ",".join(rep.next) or f"({rep.stop})", rep.activation if rep.next else "-",
                   " ".join(fams) or "-", cell(rep.duplicated, *ref("duplicated")), cell(len(rep.dead_units), *ref("dead")),
                   cell(rep.weight_rank, rep.weight_max_rank, *ref("weight_rank")),
                   cell(r.get("rank"), r.get("max_rank"), *ref("rank")),
                   cell(r.get("effective_rank"), *ref("effective_rank"), fmt="{:.1f}"), ",".join(rep.collapse) or "-"]
            if has_anchor:
                row.append(cell(rep.anchor_distance, fmt="{:.4g}"))
            rows.append(row)
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])

    def __str__(self) -> str:
        m = self.meta
        head = (f"syre audit of {m['model']} ({_fmt_count(m['parameters'])} parameters) on a batch of {m['batch']}; "
                f"tolerance rtol={m['rtol']:g}; reference: {m.get('reference') or 'none (structural maxima only)'}")
        fam = m.get("mirror_families", {})
        fam_line = "mirror families: " + (", ".join(f"{k} {_fmt_count(v)}" for k, v in fam.items()) or "none found")
        lines = [head, fam_line, "", self.table(), ""]
        if self.findings:
            lines.append("collapse found:")
            lines += [f"  - {f}" for f in self.findings]
        else:
            lines.append("no collapse found (no layer clearly below what it could have; rules in "
                         "syre.diagnostics.audit)")
        if self.observations:
            lines.append("also seen, within what the structure and a fresh layer have:")
            lines += [f"  - {f}" for f in self.observations]
        if m.get("notes"):
            lines.append("notes:")
            lines += [f"  - {n}" for n in m["notes"]]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Report {self.meta['model']}: {len(self.layers)} layers, {len(self.findings)} findings>"

    def plot(self, path) -> str:
        """Save a PNG: per layer, the degree of symmetry of each family, the share of duplicated and
        dead units (and the fresh init's), and the representation rank over what the layer could
        have. Returns ``path``."""
        names = [rep.name for rep in self.layers]
        x = list(range(len(names)))
        fig = figure("Report.plot", figsize=(max(10.0, min(30.0, 1.6 * len(names))), 3.8))
        axes = fig.subplots(1, 3)
        fams = ["permutation", "sign", "rescaling", "rotation"]
        wbar = 0.8 / len(fams)
        for k, f in enumerate(fams):
            vals = []
            for rep in self.layers:  # attention's "rotation QK"/"rotation VO" count as rotation
                ds = [d for key, d in rep.families.items() if key == f or key.startswith(f + " ")]
                near, count = sum(d["near"] for d in ds), sum(d["count"] for d in ds)
                vals.append(100 * near / count if count else 0.0)
            axes[0].bar([i + (k - 1.5) * wbar for i in x], vals, wbar, label=f)
        axes[0].set_title("degree of symmetry\n(% of mirrors within tolerance)", fontsize=9)
        axes[0].legend(fontsize=7)
        share = lambda n, rep: 100 * n / max(rep.units, 1)  # noqa: E731
        axes[1].bar([i - 0.2 for i in x], [share(rep.duplicated, rep) for rep in self.layers], 0.4, label="duplicated")
        axes[1].bar([i + 0.2 for i in x], [share(len(rep.dead_units), rep) for rep in self.layers], 0.4, label="dead")
        if any(rep.reference is not None for rep in self.layers):
            axes[1].scatter([i + 0.2 for i in x], [share(_ref(rep, "dead") or 0, rep) for rep in self.layers], marker="_",
                            s=200, color="k", label="dead at init", zorder=3)
        axes[1].set_title("units in a collapsed state\n(% of the layer)", fontsize=9)
        axes[1].legend(fontsize=7)
        rank = []
        for rep in self.layers:
            e = rep.evidence.get("representation rank")
            rank.append(100 * e["value"] / e["could_have"] if e and e["could_have"] else float("nan"))
        axes[2].bar(x, rank)
        axes[2].axhline(100 * _verdict.RANK_SHARE, color="r", lw=0.8, ls="--", label=f"flag below {_verdict.RANK_SHARE:.0%}")
        axes[2].set_title("representation rank\n(% of what the layer could have)", fontsize=9)
        axes[2].legend(fontsize=7)
        for ax in axes:
            ax.set_xticks(x)
            ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        fig.suptitle(f"syre audit: {self.meta['model']}", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return str(path)
