"""One matrix, every question of the seed note: raw, centered and random side by side.

:func:`analyze` runs the sampled protocol (and the exact full pass when asked) on up to four
variants of a matrix, measured the same way:

* **raw**: the rows as stored;
* **centered** and **centered, top-K PCs removed** (:mod:`embkern.transform`);
* **random N(0, 1)**: a seeded Gaussian matrix with as many rows as the raw matrix has measured
  rows and the same width (:func:`embkern.transform.random_baseline`).

Around the raw variant it adds what explains the numbers: flagged rows (special, padding,
under-trained; excluded on request), the token classes and id ranges enriched among negative
partners (from the full pass's per-token statistics), isotropy measures, the error of the
sampled protocol against the exact result, and a cross pass against a second matrix.

**Sampled vs exact.** The sampled table averages per-anchor values over K anchors drawn without
replacement from the n measured rows. Its exact counterpart is the same average over all n
rows, available after a full pass with per-token statistics, for every column but the median
(per-token medians are not reduced): mean over tokens of the per-token min, max, mean and
negative count. The confidence interval of each averaged column is the normal interval
m ± z·s/√K·√((n − K)/(n − 1)), s the standard deviation over anchors, with the finite-population
correction for drawing without replacement; z = 1.96 for 95 %. With fewer than about 30
anchors the normal approximation is rough.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np
import torch

from . import engine, sampled
from .backends import get_backend, resolve_device
from .cross import CrossResult, cross_pass
from .errors import InputError
from .prepare import Prepared, as_matrix, prepare
from .results import FullResult, SampledResult
from .transform import TransformInfo, center_and_project, random_baseline

EXCLUDABLE = ("special", "padding", "untrained")
#: Non-heavy rows allowed between two heavy rows of one negative-partner id range (see
#: :func:`embkern.tokenclass.negative_ranges`): 6 joins SmolLM2's printable-ASCII band, ids
#: 17-105, into one range, where gaps of 2 split it into three.
RANGE_GAP = 6
#: The seed note's band: tokens that are one ASCII character (control, space, punctuation,
#: digit, letter), wherever their ids are.
BAND_NAME = "single ASCII characters"
#: Columns of the sampled table that have an exact counterpart after a full pass.
_EXACT_COLUMNS = ("min", "max", "mean", "nonneg", "neg", "frac_nonneg")
_Z95 = 1.959963984540054
_ROUNDING = 1e-6


@dataclass
class Variant:
    """One matrix measured by the protocol: the sampled table and, if run, the full pass."""

    name: str
    sampled: SampledResult
    full: FullResult | None = None
    transform: TransformInfo | None = None

    def to_dict(self, negative_ids: bool = False) -> dict:
        return {
            "name": self.name,
            "transform": None if self.transform is None else self.transform.to_dict(),
            "sampled": self.sampled.to_dict(negative_ids),
            "full": None if self.full is None else self.full.to_dict(),
        }


@dataclass
class ColumnError:
    """One column of the sampled table against its exact value over all rows."""

    column: str
    sampled: float
    ci_low: float
    ci_high: float
    exact: float | None

    @property
    def error(self) -> float | None:
        return None if self.exact is None else self.sampled - self.exact

    @property
    def covered(self) -> bool | None:
        """Whether the interval holds the exact value, up to the fp32 rounding by which the
        sampled and the full pass may see the same cosine differently (1e-6 relative)."""
        if self.exact is None:
            return None
        slack = _ROUNDING * max(1.0, abs(self.exact))
        return self.ci_low - slack <= self.exact <= self.ci_high + slack

    def to_dict(self) -> dict:
        return {
            "column": self.column,
            "sampled": self.sampled,
            "ci95": [self.ci_low, self.ci_high],
            "exact": self.exact,
            "error": self.error,
            "covered": self.covered,
        }


def confidence_intervals(s: SampledResult, n: int, z: float = _Z95) -> dict[str, tuple]:
    """Normal intervals (with finite-population correction) for each averaged column."""
    K = len(s.anchors)
    fpc = math.sqrt((n - K) / (n - 1)) if n > 1 else 0.0
    out = {}
    for col in ("min", "max", "mean", "median", "nonneg", "neg", "frac_nonneg"):
        values = np.array([getattr(a, col) for a in s.anchors], dtype=np.float64)
        m = float(values.mean())
        half = z * float(values.std(ddof=1)) / math.sqrt(K) * fpc if K > 1 else math.inf
        out[col] = (m, m - half, m + half)
    return out


def sampled_vs_exact(s: SampledResult, full: FullResult, n: int) -> list[ColumnError]:
    """Each column of the sampled table with its 95 % interval and its exact value."""
    pt = full.per_token
    exact: dict[str, float] = {}
    if pt is not None:
        v = pt.valid
        neg = pt.neg[v].astype(np.float64)
        exact = {
            "min": float(pt.min[v].mean()),
            "max": float(pt.max[v].mean()),
            "mean": float(pt.mean[v].mean()),
            "neg": float(neg.mean()),
            "nonneg": float((n - 1 - neg).mean()),
            "frac_nonneg": float(((n - 1 - neg) / (n - 1)).mean()),
        }
    rows = []
    for col, (m, lo, hi) in confidence_intervals(s, n).items():
        rows.append(ColumnError(col, m, lo, hi, exact.get(col)))
    return rows


@dataclass
class Analysis:
    """Everything :func:`analyze` measured; ``variants[0]`` is the raw matrix."""

    name: str
    shape: tuple[int, int]
    variants: list[Variant]
    excluded_rows: dict[str, list[int]]
    flagged: dict[str, list[int]]
    sampled_error: list[ColumnError] | None = None
    classes: list | None = None
    ascii_band: object | None = None
    ranges: list | None = None
    isotropy: object | None = None
    untrained: object | None = None
    cross: CrossResult | None = None
    token_classes: np.ndarray | None = field(default=None, repr=False)

    @property
    def raw(self) -> Variant:
        return self.variants[0]

    def to_dict(self, negative_ids: bool = False) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "excluded_rows": self.excluded_rows,
            "flagged_rows": {k: len(v) for k, v in self.flagged.items()},
            "variants": [v.to_dict(negative_ids) for v in self.variants],
            "sampled_vs_exact": None
            if self.sampled_error is None
            else [c.to_dict() for c in self.sampled_error],
            "token_classes": None if self.classes is None else [c.to_dict() for c in self.classes],
            "ascii_band": None if self.ascii_band is None else self.ascii_band.to_dict(),
            "negative_ranges": None if self.ranges is None else [r.to_dict() for r in self.ranges],
            "isotropy": None if self.isotropy is None else self.isotropy.to_dict(),
            "untrained": None if self.untrained is None else self.untrained.to_dict(),
            "cross": None if self.cross is None else self.cross.to_dict(),
        }


def _attr(m, name: str, default):
    return getattr(m, name, default) if hasattr(m, "matrix") else default


def flagged_rows(m, X: torch.Tensor) -> tuple[dict[str, list[int]], object]:
    """Rows that can be excluded by category (see README).

    ``special``: the tokenizer's special tokens and the reserved placeholder slots
    (``[unusedN]``, ``<unusedN>``); ``padding``: rows past the tokenizer's vocabulary;
    ``untrained``: :func:`embkern.untrained.untrained_rows`.
    """
    from .tokenclass import reserved_ids
    from .untrained import untrained_rows

    result = untrained_rows(X)
    tokens = _attr(m, "tokens", None)
    special = set(_attr(m, "special_ids", []))
    if tokens is not None:
        special.update(reserved_ids(tokens))
    return {
        "special": sorted(special),
        "padding": list(_attr(m, "padding_rows", [])),
        "untrained": [int(i) for i in result.ids],
    }, result


def check_exclude(exclude: Collection[str] | str) -> tuple[str, ...]:
    if isinstance(exclude, str):
        exclude = [e for e in exclude.replace(" ", "").split(",") if e]
    bad = [e for e in exclude if e not in EXCLUDABLE]
    if bad:
        raise InputError(
            f"cannot exclude {', '.join(map(repr, bad))}: choose among {', '.join(EXCLUDABLE)}"
        )
    return tuple(dict.fromkeys(exclude))


def analyze(
    m,
    *,
    anchors: int = 50,
    seed: int = 0,
    anchor_ids: Collection[int] | None = None,
    full: bool = False,
    exact_quantiles: bool = False,
    backend: str = "auto",
    device: str | torch.device | None = None,
    block: int | None = None,
    baseline: str | None = None,
    center: bool = False,
    remove_pcs: int = 0,
    exclude: Collection[str] = (),
    against=None,
    isotropy: bool = False,
    precision: str = "ieee",
    progress: Callable[[str], Callable[[int, int], Callable[[int], None]] | None] | None = None,
) -> Analysis:
    """Measure a matrix and its variants; see the module docstring.

    Args:
        m: a :class:`~embkern.loading.LoadedMatrix` (tokens, special and padding rows known)
            or any 2-D float tensor / numpy array.
        baseline: None or "random".
        center: add the centered variant.
        remove_pcs: K > 0 adds the centered variant with the top-K principal directions
            projected out (and the centered one).
        exclude: categories of rows to leave out of every statistic, among
            ``special``, ``padding``, ``untrained``.
        against: a second matrix (LoadedMatrix or tensor) of the same width for a cross pass.
        isotropy: compute the isotropy measures of the measured rows.
        precision: input precision of fp32 products in the triton backend.
        progress: called with a label per pass (e.g. "raw"), returns the progress factory of
            :func:`embkern.engine.full_pass` or None.
    """
    if baseline not in (None, "random"):
        raise InputError(f"unknown baseline {baseline!r}; the only baseline is 'random'")
    if remove_pcs < 0:
        raise InputError(f"--remove-pcs must be 0 or more, got {remove_pcs}")
    exclude = check_exclude(exclude)
    X = as_matrix(m)
    name = _attr(m, "name", "matrix")
    dev = resolve_device(device)
    impl = get_backend(backend, dev, precision) if full or against is not None else None
    flagged, untrained = flagged_rows(m, X)
    prep = prepare(X, dev, {k: flagged[k] for k in exclude})

    def measure(label: str, p: Prepared, ids, per_token: bool) -> tuple:
        if ids is not None:
            s = sampled.sampled_stats(p, sampled.anchors_from_ids(p, list(ids)), seed=None)
        else:
            s = sampled.sampled_stats(p, sampled.draw_anchors(p, anchors, seed), seed=seed)
        f = None
        if full:
            f = engine.full_pass(
                p,
                impl,
                per_token=per_token,
                exact_quantiles=exact_quantiles,
                block=block,
                progress=progress(label) if progress else None,
            )
        return s, f

    s, f = measure("raw", prep, anchor_ids, per_token=True)
    variants = [Variant("raw", s, f)]
    # The transformed variants use the raw variant's anchors, so the tables differ only by
    # the transform.
    raw_anchor_ids = s.anchor_ids
    keep = np.zeros(X.shape[0], bool)
    keep[prep.valid_ids] = True
    pcs = [0] if center and not remove_pcs else ([0, remove_pcs] if remove_pcs else [])
    for k in pcs:
        T, info = center_and_project(X, keep, k)
        try:
            tprep = prepare(T, dev, prep.excluded)
        except InputError as exc:
            raise InputError(
                f"{info.name} rows: {exc}; the transform made the rows zero (are all the"
                " measured rows equal?)"
            ) from None
        del T
        before = set(prep.excluded.get("zero_norm", []))
        info.zero_rows = [i for i in tprep.excluded["zero_norm"] if i not in before]
        usable = set(tprep.valid_ids.tolist())
        ids = [i for i in raw_anchor_ids if i in usable]
        ts, tf = measure(info.name, tprep, ids or None, per_token=False)
        variants.append(Variant(info.name, ts, tf, info))
        del tprep
    if baseline == "random":
        R = random_baseline(prep.n, X.shape[1], seed)
        rprep = prepare(R, dev)
        rs, rf = measure("random", rprep, None, per_token=False)
        variants.append(Variant("random N(0, 1)", rs, rf))
        del R, rprep
    out = Analysis(
        name=name,
        shape=(X.shape[0], X.shape[1]),
        variants=variants,
        excluded_rows=prep.excluded,
        flagged=flagged,
        untrained=untrained,
    )
    if f is not None:
        out.sampled_error = sampled_vs_exact(s, f, prep.n)
        _token_findings(out, m, f)
    if isotropy:
        from .isotropy import isotropy as isotropy_measures

        # The raw rows (prepare may rescale rows of extreme norm by powers of two), without
        # the rows excluded by category; isotropy() leaves out non-finite and zero rows itself.
        by_category = any(prep.excluded.get(k) for k in exclude)
        rows = X[torch.as_tensor(prep.valid_ids)] if by_category else X
        out.isotropy = isotropy_measures(rows)
    if against is not None:
        B = as_matrix(against, "the --against matrix")
        V_b = B.shape[0]
        b_exclude = {k: [i for i in ids if i < V_b] for k, ids in prep.excluded.items()}
        b_exclude = {k: v for k, v in b_exclude.items() if k in exclude}
        bprep = prepare(B, dev, b_exclude)
        out.cross = cross_pass(
            prep,
            bprep,
            impl,
            exact_quantiles=exact_quantiles,
            block=block,
            progress=progress("cross") if progress else None,
        )
    return out


def _token_findings(out: Analysis, m, f: FullResult) -> None:
    """Token classes and id ranges enriched among negative partners (needs per-token stats)."""
    from .tokenclass import SINGLE_ASCII, class_table, classify, group_row, negative_ranges

    tokens = _attr(m, "tokens", None)
    if tokens is not None:
        no_token = list(_attr(m, "padding_rows", []))
        out.token_classes = classify(tokens, _attr(m, "special_ids", []), no_token)
        out.classes = class_table(out.token_classes, f.per_token)
        member = np.isin(out.token_classes, list(SINGLE_ASCII))
        out.ascii_band = group_row(BAND_NAME, member, f.per_token)
    out.ranges = negative_ranges(f.per_token, max_gap=RANGE_GAP)
