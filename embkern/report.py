"""Human-readable summaries, the seed note's comparison table, JSON and the per-token CSV.

Nothing here computes a statistic: it formats :mod:`embkern.results` objects.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from tabulate import tabulate

from .errors import InputError
from .results import FullResult, SampledResult

SEED_COLUMNS = [
    "Model",
    "Protocol",
    "Min",
    "Max",
    "Mean",
    "Median",
    "Non-negative pairs",
    "Negative pairs",
    "Percentage of positive entries",
]
PER_TOKEN_COLUMNS = ["token_id", "token", "neg", "mean", "min", "max", "nearest_id", "nearest_cos"]


def check_output_path(path: str | Path, flag: str) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path} is a directory; give a file name inside it")
    if not path.parent.is_dir():
        raise InputError(f"{flag} {path}: folder {path.parent} does not exist; create it first")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"{flag} {path}: folder {path.parent} is not writable")


def write_atomic(path: str | Path, text: str) -> None:
    """Write text to path through a temporary file, so an interrupted run leaves no half file.

    The file gets the usual permissions (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stats_document(
    source: dict, sampled: SampledResult | None, full: FullResult | None, negative_ids: bool = False
) -> dict:
    """The ``--json`` document: source, shape, excluded_rows, sampled, full."""
    return {
        **source,
        "sampled": None if sampled is None else sampled.to_dict(negative_ids),
        "full": None if full is None else full.to_dict(),
    }


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def seed_row(model: str, sampled: SampledResult | None = None, full: FullResult | None = None):
    """One row of the seed note's table, from the sampled protocol or the full pass."""
    if sampled is not None:
        k = len(sampled.anchors)
        return [
            model,
            f"sampled ({k} anchors)",
            sampled.min,
            sampled.max,
            sampled.mean,
            sampled.median,
            sampled.nonneg,
            sampled.neg,
            sampled.frac_nonneg,
        ]
    return [
        model,
        "full (all pairs)",
        full.min,
        full.max,
        full.mean,
        full.quantiles.get(0.5),
        full.nonneg,
        full.neg,
        full.frac_nonneg,
    ]


def seed_table(rows: list[list], fmt: str = "markdown", first: str = "Model") -> str:
    """Render seed-table rows as a markdown table or CSV; ``first`` names the first column."""
    columns = [first, *SEED_COLUMNS[1:]]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return buf.getvalue()
    shown = [
        [
            r[0],
            r[1],
            f"{r[2]:.4f}",
            f"{r[3]:.4f}",
            f"{r[4]:.4f}",
            "" if r[5] is None else f"{r[5]:.4f}",
            _count(r[6]),
            _count(r[7]),
            f"{r[8]:.4f}",
        ]
        for r in rows
    ]
    return tabulate(shown, headers=columns, tablefmt="github", disable_numparse=True)


def _count(x: float) -> str:
    return f"{x:,}" if isinstance(x, (int, np.integer)) else f"{x:,.2f}"


def per_token_csv(full: FullResult, tokens: list[str]) -> str:
    """The per-token CSV; excluded rows keep their id and token with empty statistics."""
    pt = full.per_token
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PER_TOKEN_COLUMNS)
    for i in range(len(pt)):
        if not pt.valid[i]:
            writer.writerow([i, tokens[i], "", "", "", "", "", ""])
            continue
        writer.writerow(
            [
                i,
                tokens[i],
                int(pt.neg[i]),
                repr(float(pt.mean[i])),
                repr(float(pt.min[i])),
                repr(float(pt.max[i])),
                int(pt.nearest_id[i]),
                repr(float(pt.nearest_cos[i])),
            ]
        )
    return buf.getvalue()


def _tok(tokens: list[str] | None, i: int) -> str:
    return f"{i} {tokens[i]}" if tokens else str(i)


def excluded_summary(excluded: dict[str, list[int]], limit: int = 10) -> str:
    parts = []
    for reason, ids in excluded.items():
        if ids:
            more = f" … (+{len(ids) - limit})" if len(ids) > limit else ""
            parts.append(
                f"{len(ids)} {reason.replace('_', '-')} ({', '.join(map(str, ids[:limit]))}{more})"
            )
    return "; ".join(parts) if parts else "none"


def sampled_summary(s: SampledResult, tokens: list[str] | None, show_partners: int = 20) -> str:
    seed = "given ids" if s.seed is None else f"seed {s.seed}"
    lines = [
        f"Sampled protocol: {len(s.anchors)} anchors ({seed}), each against every other row",
        f"  averaged over anchors: min {s.min:.4f}  max {s.max:.4f}  mean {s.mean:.4f}"
        f"  median {s.median:.4f}",
        f"  non-negative {s.nonneg:,.2f}  negative {s.neg:,.2f}  fraction non-negative"
        f" {s.frac_nonneg:.4f}",
    ]
    if show_partners and s.anchors:
        a = s.anchors[0]
        ids = a.negative_ids[:show_partners]
        lines.append(
            f"  negative partners of anchor {_tok(tokens, a.token_id)}: {a.neg:,} in all;"
            f" first {len(ids)} ids: {', '.join(map(str, ids))}"
        )
        if tokens is not None and len(ids):
            lines.append("    tokens: " + "  ".join(tokens[i] for i in ids))
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6f}"


def full_summary(f: FullResult, tokens: list[str] | None, top: int = 10) -> str:
    kind = "exact" if f.quantiles_exact else f"histogram, ±{f.quantile_error:g}"
    qline = "  ".join(f"{q * 100:g}%: {v:.4f}" for q, v in f.quantiles.items())
    lines = [
        f"Full vocabulary: {f.pairs:,} pairs i < j (backend {f.backend})",
        f"  min {f.min:.6f}  max {f.max:.6f}  mean {f.mean:.6f}  std {f.std:.6f}",
        f"  negative {f.neg:,}  non-negative {f.nonneg:,}  fraction non-negative"
        f" {f.frac_nonneg:.6f}",
        *(
            []
            if f.neg_uncertain is None
            else [
                f"  sign band: {f.neg_uncertain:,} pairs have |cos| < {f.sign_band:.3g}, where"
                " this precision cannot guarantee the sign (negative count ± that many)"
            ]
        ),
        f"  quantiles ({kind}): {qline}",
        f"  closed-form check: mean {_fmt(f.closed_form['mean'])}"
        f"  std {_fmt(f.closed_form['std'])}",
        "  histogram: " + _sparkline(f.histogram_counts, f.histogram_edges),
    ]
    pt = f.per_token
    if pt is not None and top:
        order = np.argsort(-np.where(pt.valid, pt.neg, -1), kind="stable")[:top]
        lines.append(f"  tokens with the most negative partners (of {int(pt.valid.sum()) - 1}):")
        for i in order:
            lines.append(
                f"    {_tok(tokens, int(i))}: {int(pt.neg[i]):,} negative, mean {pt.mean[i]:.4f},"
                f" nearest {_tok(tokens, int(pt.nearest_id[i]))} ({pt.nearest_cos[i]:.4f})"
            )
    return "\n".join(lines)


def _sparkline(counts: np.ndarray, edges: np.ndarray, width: int = 40) -> str:
    """A one-line picture of the occupied part of the histogram."""
    nz = np.nonzero(counts)[0]
    if nz.size == 0:
        return "(empty)"
    lo, hi = nz[0], nz[-1] + 1
    span = counts[lo:hi]
    groups = np.array_split(span, min(width, span.size))
    heights = np.array([g.sum() for g in groups], dtype=float)
    ramp = " ▁▂▃▄▅▆▇█"
    idx = np.ceil(heights / heights.max() * (len(ramp) - 1)).astype(int)
    return f"[{edges[lo]:+.2f} {''.join(ramp[i] for i in idx)} {edges[hi]:+.2f}]"


def flagged_summary(flagged: dict[str, list[int]]) -> str:
    """Counts of the rows ``--exclude`` can leave out, by category."""
    return ", ".join(f"{len(ids)} {what}" for what, ids in flagged.items())


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.2f}%"


def _ratio(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2f}x"


def _tokens_of(tokens: list[str] | None, start: int, end: int, limit: int = 12) -> str:
    if tokens is None:
        return ""
    shown = " ".join(tokens[i] for i in range(start, min(end + 1, start + limit)))
    return f": {shown}{' …' if end + 1 - start > limit else ''}"


def analysis_summary(a, tokens: list[str] | None, other=None) -> str:
    """Variants side by side, sampled error, token findings, isotropy and cross statistics."""
    out = []
    if len(a.variants) > 1:
        rows = []
        for v in a.variants:
            rows.append(seed_row(v.name, sampled=v.sampled))
            if v.full is not None:
                rows.append(seed_row(v.name, full=v.full))
        out.append("Side by side:")
        out.append(seed_table(rows, first="Variant"))
        for v in a.variants:
            t = v.transform
            if t is None:
                continue
            line = f"  {v.name}: the mean row (norm {t.mean_norm:.4g}) carried"
            line += f" {_pct(t.mean_share)} of the rows' squared norm"
            if t.remove_pcs:
                line += f"; the top {t.remove_pcs} PCs carried {_pct(t.pc_share)} of the"
                line += " centered variance"
            if t.zero_rows:
                line += f"; {len(t.zero_rows)} rows became zero and are left out"
                line += f" ({', '.join(map(str, t.zero_rows[:10]))})"
            out.append(line)
    if a.sampled_error:
        out.append("Sampled protocol against the exact average over all tokens (95% CI):")
        table = [
            [
                c.column,
                f"{c.sampled:.4f}",
                f"[{c.ci_low:.4f}, {c.ci_high:.4f}]",
                "n/a" if c.exact is None else f"{c.exact:.4f}",
                "n/a" if c.error is None else f"{c.error:+.4f}",
                {True: "yes", False: "no", None: "n/a"}[c.covered],
            ]
            for c in a.sampled_error
        ]
        out.append(
            tabulate(
                table,
                headers=["column", "sampled", "95% CI", "exact", "error", "in CI"],
                tablefmt="github",
                disable_numparse=True,
            )
        )
    if a.classes:
        out.append("Token classes among negative partners (enrichment = share of negative")
        out.append("partner slots / share of the vocabulary):")
        table = [
            [
                c.name,
                f"{c.tokens:,}",
                _pct(c.vocab_share),
                _pct(c.neg_share),
                _ratio(c.enrichment),
                "n/a"
                if c.mean_cos is None or not math.isfinite(c.mean_cos)
                else f"{c.mean_cos:.4f}",
            ]
            for c in a.classes
            if c.tokens
        ]
        out.append(
            tabulate(
                table,
                headers=["class", "tokens", "of vocab", "of negatives", "enrichment", "mean cos"],
                tablefmt="github",
                disable_numparse=True,
            )
        )
    if a.ascii_band is not None:
        b = a.ascii_band
        out.append(
            f"The seed note's band, {b.name}: {b.tokens:,} tokens, {_pct(b.vocab_share)} of the"
            f" vocabulary and {_pct(b.neg_share)} of negative partner slots: enrichment"
            f" {_ratio(b.enrichment)}, mean cosine {b.mean_cos:.4f}"
        )
    if a.ranges is not None:
        if not a.ranges:
            out.append("Id ranges enriched among negative partners: none")
        else:
            out.append("Id ranges enriched among negative partners:")
            for r in a.ranges:
                shown = _tokens_of(tokens, r.start, r.end)
                out.append(f"  ids {r.start}-{r.end} ({r.tokens} tokens{shown})")
                out.append(
                    f"    {_pct(r.neg_share)} of negative partner slots, {_pct(r.vocab_share)} of"
                    f" the vocabulary: enrichment {_ratio(r.enrichment)}"
                )
    if a.isotropy is not None:
        iso = a.isotropy
        out.append(
            f"Isotropy: average cosine {iso.average_cosine:.4f}, I(W) {iso.partition_isotropy:.4g}"
            f" (log {iso.partition_log_ratio:.4g}), IsoScore {iso.isoscore:.4f}, effective rank"
            f" {iso.effective_rank:.1f} (centered {iso.effective_rank_centered:.1f}) of"
            f" {iso.dim}, top PC {_pct(iso.top_pc_variance_fraction)} of the variance"
        )
    if a.cross is not None:
        c, ss = a.cross, a.cross.self_similarity.summary()
        f = c.pairs
        what = "" if other is None else f" against {other.name} ({other.tensor_name})"
        out.append(f"Cross statistics{what}: {f.pairs:,} pairs (every row against every row)")
        out.append(f"  excluded rows of the other matrix: {excluded_summary(c.excluded_b)}")
        out.append(
            f"  min {f.min:.6f}  max {f.max:.6f}  mean {f.mean:.6f}  std {f.std:.6f}"
            f"  fraction non-negative {f.frac_nonneg:.6f}"
        )
        if ss["tokens"]:
            out.append(
                f"  self-similarity cos(A_i, B_i) over {ss['tokens']:,} tokens: mean"
                f" {ss['mean']:.4f}  median {ss['median']:.4f}  min {ss['min']:.4f}  max"
                f" {ss['max']:.4f}  negative {ss['neg']:,}"
            )
            low = ", ".join(f"{_tok(tokens, i)} ({v:.3f})" for i, v in ss["lowest"][:5])
            out.append(f"  lowest self-similarity: {low}")
    return "\n".join(out)
