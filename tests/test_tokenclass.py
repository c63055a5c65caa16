"""Token classes from display strings, class shares of negative partners, negative id ranges."""

from __future__ import annotations

import numpy as np
import pytest

from embkern import tokens
from embkern.results import PerTokenResult
from embkern.tokenclass import (
    CLASSES,
    SINGLE_ASCII,
    class_table,
    classify,
    is_byte_level,
    negative_ranges,
    unescape,
)

# The raw byte-level forms of the bytes 0x80-0xA0 and 0xAD: every byte-level vocabulary has them.
RAW_ONLY = [chr(c) for c in range(0x122, 0x144)]


def _one(shown: str, *, byte_level: bool = False) -> str:
    return CLASSES[classify([shown], (), byte_level=byte_level)[0]]


def _per_token(neg, valid=None, mean=None) -> PerTokenResult:
    neg = np.asarray(neg, dtype=np.int64)
    V = neg.size
    valid = np.ones(V, bool) if valid is None else np.asarray(valid, bool)
    mean = np.linspace(-0.1, 0.5, V) if mean is None else np.asarray(mean, np.float64)
    neg = np.where(valid, neg, -1)
    mean = np.where(valid, mean, np.nan)
    return PerTokenResult(
        valid=valid,
        neg=neg,
        mean=mean,
        min=np.where(valid, -0.5, np.nan),
        max=np.where(valid, 0.9, np.nan),
        nearest_id=np.where(valid, 0, -1),
        nearest_cos=np.where(valid, 0.9, np.nan),
    )


@pytest.mark.parametrize(
    ("shown", "text"),
    [
        ("the", "the"),
        ("␣the", " the"),
        ("the␣␣", "the  "),
        ("␣␣␣", "   "),
        ("New York", "New York"),
        ("a␣b", "a␣b"),
        ("\\n", "\n"),
        ("\\t", "\t"),
        ("\\r", "\r"),
        ("\\\\", "\\"),
        ("\\\\n", "\\n"),
        ("\\x00", "\x00"),
        ("\\x7f", "\x7f"),
        ("\\u2028", "\u2028"),
        ("a\\u00e9", "aé"),
        ("\\xzz", "\\xzz"),
        ("\\", "\\"),
        ("␣\\n␣", " \n "),
        ('""', '""'),
    ],
)
def test_unescape(shown, text):
    assert unescape(shown) == text


@pytest.mark.parametrize(
    "text", [" the", "x\ny", "\t\t", "\\", "a\\nb", " \x00 ", "\u200b", "\x85", "tab\there "]
)
def test_unescape_inverts_the_display_rule(text):
    assert unescape(tokens.escape_token(text)) == text


@pytest.mark.parametrize(
    ("shown", "name"),
    [
        ("␣", "ASCII control/space"),
        ("\\n", "ASCII control/space"),
        ("\\t", "ASCII control/space"),
        ("\\r", "ASCII control/space"),
        ("\\x00", "ASCII control/space"),
        ("\\x1f", "ASCII control/space"),
        ("\\x7f", "ASCII control/space"),
        ("!", "ASCII punctuation"),
        ("\\\\", "ASCII punctuation"),
        ("~", "ASCII punctuation"),
        ("#", "ASCII punctuation"),
        ("0", "ASCII digit"),
        ("9", "ASCII digit"),
        ("A", "ASCII letter"),
        ("z", "ASCII letter"),
        ("␣␣", "whitespace"),
        ("\\n\\n␣␣␣", "whitespace"),
        ("\\u3000", "whitespace"),
        ("␣1", "number"),
        ("2024", "number"),
        ("##5", "number"),
        ("␣the", "ASCII word"),
        ("ing", "ASCII word"),
        ("##ing", "ASCII word"),
        ("␣a", "ASCII word"),
        ("()", "ASCII symbols"),
        ("␣=", "ASCII symbols"),
        ('""', "ASCII symbols"),
        ("##!", "ASCII symbols"),
        ("##", "ASCII symbols"),
        ("␣{\\n", "ASCII symbols"),
        ("'s", "ASCII other"),
        ("x86", "ASCII other"),
        ("␣the\\n", "ASCII other"),
        ("a\\\\b", "ASCII other"),
        ("的", "CJK"),
        ("##的", "CJK"),
        ("␣日本", "CJK"),
        ("한국", "CJK"),
        ("，", "CJK"),
        ("é", "other non-ASCII"),
        ("␣“", "other non-ASCII"),
        ("—", "other non-ASCII"),
        ("πο", "other non-ASCII"),
        ("\\u200b", "other non-ASCII"),
        ("ón", "mixed"),
        ("␣García", "mixed"),
        ("km²", "mixed"),
        ("<0xE2>", "byte"),
        ("<0x0A>", "byte"),
        ("<0xe2>", "ASCII other"),
        ("[unused3]", "reserved"),
        ("<unused17>", "reserved"),
        ("<|endoftext|>", "ASCII other"),
        ("[CLS]", "ASCII other"),
    ],
)
def test_classify_display_strings(shown, name):
    assert _one(shown) == name


def test_single_ascii_band_is_one_character_each():
    band = ["␣", "\\n", "\\x00", "!", "5", "q"]
    outside = ["␣a", "10", "é", "<0x41>", "␣␣", "()", "\\n\\n"]
    codes = classify(band + outside, ())
    assert all(int(c) in SINGLE_ASCII for c in codes[: len(band)])
    assert not any(int(c) in SINGLE_ASCII for c in codes[len(band) :])
    assert codes.dtype == np.int8


def test_special_and_no_token_rows():
    shown = ["<s>", "a", "<row 2: no token>", "#3", "#9", "<row 7: no token>", "b"]
    codes = classify(shown, special_ids=[0, 6], no_token_ids=[1])
    names = [CLASSES[c] for c in codes]
    # '#9' and '<row 7: ...>' do not carry their own id, so they are ordinary text.
    assert names == [
        "special",
        "no token",
        "no token",
        "no token",
        "ASCII other",
        "ASCII other",
        "special",
    ]


def test_rows_without_tokenizer_are_all_no_token():
    codes = classify(tokens.without_tokenizer(50).tokens, ())
    assert set(codes.tolist()) == {CLASSES.index("no token")}


def test_byte_level_vocabulary():
    shown = ["<|endoftext|>", "!", "\\x00", "é", "¡", *RAW_ONLY, "␣the", "é", "âĢ", "ä¸"]
    shown += ["ĠâĢ", "Ð¾Ð", "ón", "°C", "␣°", "ā", "ł"]
    assert is_byte_level(shown)
    names = [CLASSES[c] for c in classify(shown, special_ids=[0])]
    expect = ["special", "ASCII punctuation", "ASCII control/space", "byte", "byte"]
    expect += ["byte"] * len(RAW_ONLY)
    expect += ["ASCII word", "other non-ASCII", "byte fragment", "byte fragment"]
    # 'ł' was already seen among the raw forms (byte 0xA0), so the later one is the letter.
    expect += ["byte fragment", "byte fragment", "mixed", "mixed", "other non-ASCII"]
    expect += ["other non-ASCII", "other non-ASCII"]
    assert names == expect


def test_byte_level_detection_and_override():
    shown = ["a", "é", "âĢ", *RAW_ONLY]
    assert is_byte_level(shown)
    assert not is_byte_level(shown[:-1])
    assert not is_byte_level([*shown, "<0x41>"])
    plain = [CLASSES[c] for c in classify(shown, (), byte_level=False)]
    assert plain[:3] == ["ASCII letter", "other non-ASCII", "other non-ASCII"]
    forced = [CLASSES[c] for c in classify(["é", "âĢ"], (), byte_level=True)]
    assert forced == ["byte", "byte fragment"]


# ---------------------------------------------------------------------------- class_table


def _brute_table(codes, pt):
    valid_ids = [i for i in range(len(pt)) if pt.valid[i]]
    total = sum(int(pt.neg[i]) for i in valid_ids)
    out = {}
    for code, name in enumerate(CLASSES):
        members = [i for i in valid_ids if codes[i] == code]
        if not members:
            continue
        ends = sum(int(pt.neg[i]) for i in members)
        vs = len(members) / len(valid_ids)
        ns = ends / total if total else None
        out[name] = dict(
            tokens=len(members),
            neg_endpoints=ends,
            vocab_share=vs,
            neg_share=ns,
            enrichment=None if ns is None else ns / vs,
            mean_cos=sum(float(pt.mean[i]) for i in members) / len(members),
            neg_tokens=sum(1 for i in members if pt.neg[i] > 0),
        )
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_table_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    V = 300
    codes = rng.integers(0, len(CLASSES), V).astype(np.int8)
    codes[codes == 3] = 4  # leave one class empty: it must not appear
    neg = rng.integers(0, 50, V) * (rng.random(V) < 0.7)
    valid = rng.random(V) < 0.9
    pt = _per_token(neg, valid, rng.normal(0.1, 0.2, V))
    rows = class_table(codes, pt)
    expect = _brute_table(codes, pt)
    assert [r.name for r in rows] == [n for n in CLASSES if n in expect]
    for r in rows:
        want = expect[r.name]
        got = r.to_dict()
        assert got["name"] == r.name
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-12, abs=0), (r.name, key)
    assert sum(r.tokens for r in rows) == int(valid.sum())
    assert sum(r.neg_share for r in rows) == pytest.approx(1.0)


def test_class_table_invalid_rows_do_not_count():
    codes = np.array([0, 0, 1, 1], np.int8)
    pt = _per_token([10, 0, 5, 5], valid=[False, True, True, True])
    rows = {r.name: r for r in class_table(codes, pt)}
    assert rows["special"].tokens == 1 and rows["special"].neg_endpoints == 0
    assert rows["special"].neg_share == 0.0 and rows["special"].enrichment == 0.0
    assert rows["no token"].neg_share == 1.0
    assert rows["no token"].enrichment == pytest.approx(1.5)


def test_class_table_without_negatives_leaves_shares_undefined():
    codes = np.array([0, 1, 1, 2], np.int8)
    rows = class_table(codes, _per_token([0, 0, 0, 0]))
    assert [r.vocab_share for r in rows] == [0.25, 0.5, 0.25]
    assert all(r.neg_share is None and r.enrichment is None for r in rows)
    assert all(r.to_dict()["enrichment"] is None for r in rows)


def test_class_table_all_in_one_class():
    pt = _per_token([3, 1, 0, 7, 2])
    (row,) = class_table(np.full(5, 11, np.int8), pt)
    assert row.name == CLASSES[11]
    assert (row.vocab_share, row.neg_share, row.enrichment) == (1.0, 1.0, 1.0)
    assert row.neg_tokens == 4 and row.tokens == 5 and row.neg_endpoints == 13


def test_class_table_checks_lengths():
    with pytest.raises(ValueError):
        class_table(np.zeros(3, np.int8), _per_token([1, 2]))


# ---------------------------------------------------------------------- negative_ranges


def _brute_ranges(pt, factor, max_gap, min_heavy):
    """Walk the ids one by one, keeping the open run and the non-heavy valid rows since its
    last heavy id."""
    V = len(pt)
    valid_ids = [i for i in range(V) if pt.valid[i]]
    total = sum(int(pt.neg[i]) for i in valid_ids)
    if not valid_ids or total == 0:
        return []
    mean = total / len(valid_ids)
    runs, run, gap = [], [], 0
    for i in range(V):
        if not pt.valid[i]:
            continue
        if pt.neg[i] >= factor * mean:
            if run and gap > max_gap:
                runs.append(run)
                run = []
            run.append(i)
            gap = 0
        else:
            gap += 1
    if run:
        runs.append(run)
    out = []
    for run in runs:
        if len(run) < min_heavy:
            continue
        start, end = run[0], run[-1]
        inside = [i for i in range(start, end + 1) if pt.valid[i]]
        ends = sum(int(pt.neg[i]) for i in inside)
        out.append(
            dict(
                start=start,
                end=end,
                tokens=len(inside),
                heavy=len(run),
                neg_endpoints=ends,
                neg_share=ends / total,
                vocab_share=len(inside) / len(valid_ids),
                enrichment=(ends / total) / (len(inside) / len(valid_ids)),
                mean_neg=ends / len(inside),
            )
        )
    out.sort(key=lambda r: (-r["neg_endpoints"], r["start"]))
    return out


@pytest.mark.parametrize(
    ("seed", "factor", "max_gap", "min_heavy"),
    [(0, 4.0, 2, 3), (1, 2.0, 0, 1), (2, 1.5, 3, 2), (3, 3.0, 1, 4), (4, 1.0, 5, 3)],
)
def test_negative_ranges_against_brute_force(seed, factor, max_gap, min_heavy):
    rng = np.random.default_rng(seed)
    V = 2000
    neg = rng.poisson(20, V)
    for start in rng.integers(0, V - 60, 12):
        span = rng.integers(3, 60)
        neg[start : start + span] = np.where(
            rng.random(span) < 0.8, rng.poisson(200, span), neg[start : start + span]
        )
    valid = rng.random(V) < 0.93
    pt = _per_token(neg, valid)
    got = [
        r.to_dict()
        for r in negative_ranges(pt, top=None, factor=factor, max_gap=max_gap, min_heavy=min_heavy)
    ]
    want = _brute_ranges(pt, factor, max_gap, min_heavy)
    assert len(got) == len(want) and len(want) > 0
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=1e-12)


def test_planted_ranges_exact_bounds_and_ranking():
    neg = np.ones(400, np.int64)
    neg[10:20] = 100  # [10, 19]
    neg[200:206] = 300  # [200, 205], more endpoints than [10, 19]
    neg[300:302] = 500  # two heavy rows only: below min_heavy
    ranges = negative_ranges(_per_token(neg))
    assert [(r.start, r.end, r.heavy, r.tokens) for r in ranges] == [
        (200, 205, 6, 6),
        (10, 19, 10, 10),
    ]
    total = neg.sum()
    assert ranges[1].neg_endpoints == 1000
    assert ranges[1].neg_share == pytest.approx(1000 / total)
    assert ranges[1].vocab_share == pytest.approx(10 / 400)
    assert ranges[1].mean_neg == 100
    assert negative_ranges(_per_token(neg), top=1)[0].start == 200
    assert negative_ranges(_per_token(neg), top=0) == []


@pytest.mark.parametrize(("hole", "joined"), [(1, True), (2, True), (3, False)])
def test_gap_of_non_heavy_rows(hole, joined):
    neg = np.ones(300, np.int64)
    neg[50:54] = 100
    neg[54 + hole : 58 + hole] = 100
    spans = [(r.start, r.end) for r in negative_ranges(_per_token(neg))]
    if joined:
        assert spans == [(50, 57 + hole)]
    else:
        assert sorted(spans) == [(50, 53), (54 + hole, 57 + hole)]


def test_invalid_rows_inside_a_range_are_skipped():
    neg = np.ones(300, np.int64)
    neg[100:120] = 100
    valid = np.ones(300, bool)
    valid[104:112] = False  # eight invalid rows: far more than max_gap, yet one range
    neg[103] = 1  # with one valid non-heavy row next to them
    (r,) = negative_ranges(_per_token(neg, valid))
    assert (r.start, r.end) == (100, 119)
    assert r.tokens == 12 and r.heavy == 11
    assert r.neg_endpoints == 11 * 100 + 1
    # An invalid row at the edge never becomes a bound.
    valid[100] = False
    (r,) = negative_ranges(_per_token(neg, valid))
    assert r.start == 101


def test_no_negatives_gives_no_ranges():
    assert negative_ranges(_per_token(np.zeros(50, np.int64))) == []
    assert negative_ranges(_per_token(np.ones(50, np.int64), valid=np.zeros(50, bool))) == []


def test_uniform_negatives_give_no_ranges():
    # Every row at the mean: none reaches 4x the mean.
    assert negative_ranges(_per_token(np.full(100, 7))) == []
    # With factor 1 every row is heavy: the whole vocabulary is one range.
    (r,) = negative_ranges(_per_token(np.full(100, 7)), factor=1.0)
    assert (r.start, r.end, r.enrichment) == (0, 99, 1.0)


def test_negative_ranges_checks_parameters():
    pt = _per_token(np.ones(10, np.int64))
    for kwargs in ({"factor": 0}, {"max_gap": -1}, {"min_heavy": 0}, {"top": -1}):
        with pytest.raises(ValueError):
            negative_ranges(pt, **kwargs)
