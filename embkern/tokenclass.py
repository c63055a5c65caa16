"""Token classes from display strings, their share of negative partners, and negative id ranges.

Classes. Each row gets exactly one class of :data:`CLASSES`; the first matching rule wins. The
display string (see :mod:`embkern.tokens`) is first turned back into text: each leading and each
trailing ``␣`` becomes a space (a string of ``␣`` only becomes that many spaces), ``\\\\``,
``\\n``, ``\\t``, ``\\r``, ``\\xHH`` and ``\\uHHHH`` become the character they stand for, and
``""`` is read as two quote characters (the empty token, shown the same way, is vanishingly
rare). "Body" below is that text with leading spaces and then one leading ``##`` (a WordPiece
continuation) removed. ASCII punctuation is :data:`string.punctuation`; whitespace is any
character for which :meth:`str.isspace` holds.

 1. ``special``: the id is in ``special_ids``.
 2. ``no token``: the id is in ``no_token_ids``, or the display string is ``<row N: no token>``
    or ``#N`` with N the row's own id (no tokenizer at all).
 3. ``reserved``: the display string is ``[unusedN]`` or ``<unusedN>`` (placeholder slots).
 4. ``byte``: a single byte. The display string is ``<0xHH>`` (SentencePiece byte fallback, shown
    raw when the byte is not ASCII), or, in a byte-level vocabulary, it is one character of the
    GPT-2 byte alphabet that stands for a non-ASCII byte (U+00A1–U+00AC, U+00AE–U+00FF,
    U+0122–U+0143) and no lower id has the same display string. Byte-level BPE stores its 256
    base pieces before any merge, so a later id with the same spelling is a decoded character
    (``é`` from ``Ã©``) and falls through to the rules below.
 5. ``byte fragment``: in a byte-level vocabulary, a string of two or more characters, all in
    the GPT-2 byte alphabet, whose bytes are not valid UTF-8 and which holds a character in
    U+0100–U+0143 or a lead-byte character (U+00C2–U+00F4) directly followed by a
    continuation-byte character (U+00A1–U+00BF): a raw piece of a multi-byte character such as
    ``âĢ`` or ``ä¸``, shown raw because it decodes to U+FFFD.
 6. ``ASCII control/space``: the text is one character below U+0021 or U+007F (``␣``, ``\\n``,
    ``\\t``, ``\\x00``).
 7. ``ASCII punctuation``: the text is one ASCII punctuation character.
 8. ``ASCII digit``: the text is one of ``0``–``9``.
 9. ``ASCII letter``: the text is one of ``A``–``Z``, ``a``–``z``.
10. ``whitespace``: every character of the text is whitespace (``␣␣``, ``\\n\\n``, ``\\u3000``).
11. ``number``: the body is one or more ASCII digits (``␣1``, ``2024``, ``##5``).
12. ``ASCII word``: the body is one or more ASCII letters (``␣the``, ``ing``, ``##ing``).
13. ``ASCII symbols``: every character is ASCII punctuation or whitespace (``()``, ``␣=``).
14. ``ASCII other``: every character is ASCII (``x86``, ``'s``, ``␣the\\n``).
15. ``CJK``: the body has at least one non-whitespace character and every one is CJK: Han
    (U+2E80–U+2FDF, U+3400–U+4DBF, U+4E00–U+9FFF, U+F900–U+FAFF, U+20000–U+3134F), CJK
    symbols and kana (U+3000–U+30FF, U+31F0–U+31FF), Hangul (U+1100–U+11FF, U+3130–U+318F,
    U+AC00–U+D7AF) or full/half-width forms (U+FF00–U+FFEF).
16. ``other non-ASCII``: the text has no ASCII letter or digit.
17. ``mixed``: everything else (non-ASCII together with ASCII letters or digits).

The note's band of single ASCII characters (punctuation, digits, letters, control characters) is
:data:`SINGLE_ASCII`: rules 6–9. A vocabulary is byte-level when no display string is ``<0xHH>``
and all 34 characters U+0122–U+0143 (the raw forms of bytes 0x80–0xA0 and 0xAD, which every
byte-level BPE vocabulary holds as single pieces) are display strings; ``classify(byte_level=)``
overrides that test.

Shares (:func:`class_table`, :func:`negative_ranges`). Only valid rows count. A negative pair
has two endpoints, so Σ_i neg_i over valid rows is twice the number of negative pairs. For a set
S of valid rows: vocab share = |S| / |valid|, negative share = Σ_{i∈S} neg_i / Σ_i neg_i, and
enrichment = negative share / vocab share; a share whose denominator is 0 is undefined (None),
and so is an enrichment built on one.
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .results import PerTokenResult

CLASSES: tuple[str, ...] = (
    "special",
    "no token",
    "reserved",
    "byte",
    "byte fragment",
    "ASCII control/space",
    "ASCII punctuation",
    "ASCII digit",
    "ASCII letter",
    "whitespace",
    "number",
    "ASCII word",
    "ASCII symbols",
    "ASCII other",
    "CJK",
    "other non-ASCII",
    "mixed",
)
_CODE = {name: code for code, name in enumerate(CLASSES)}
#: Codes of the classes made of exactly one ASCII character (the seed note's band).
SINGLE_ASCII: frozenset[int] = frozenset(
    _CODE[name]
    for name in ("ASCII control/space", "ASCII punctuation", "ASCII digit", "ASCII letter")
)

_SP_BYTE = re.compile(r"<0x[0-9A-F]{2}>")
_RESERVED = re.compile(r"\[unused\d+\]|<unused\d+>")
_NO_TOKEN = re.compile(r"<row (\d+): no token>|#(\d+)")
_PUNCT = frozenset(string.punctuation)
_DIGITS = frozenset(string.digits)
_LETTERS = frozenset(string.ascii_letters)
_NAMED = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
_CJK_RANGES = (
    (0x1100, 0x11FF),
    (0x2E80, 0x2FDF),
    (0x3000, 0x30FF),
    (0x3130, 0x318F),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),
    (0xF900, 0xFAFF),
    (0xFF00, 0xFFEF),
    (0x20000, 0x3134F),
)


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character → byte: printable bytes stand for themselves,
    the other 68 bytes take U+0100 onwards in byte order."""
    kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    kept_set = set(kept)
    moved = [b for b in range(256) if b not in kept_set]
    alphabet = {chr(b): b for b in kept}
    alphabet.update({chr(0x100 + k): b for k, b in enumerate(moved)})
    return alphabet


_BYTE_OF = _byte_alphabet()
_RAW_ONLY = frozenset(chr(c) for c in range(0x122, 0x144))
_RAW_BYTE_CHARS = frozenset(
    [chr(c) for c in (*range(0xA1, 0xAD), *range(0xAE, 0x100))] + sorted(_RAW_ONLY)
)


def unescape(shown: str) -> str:
    """The text of a display string, following the module's reading rule (``␣the`` → ``" the"``)."""
    if shown and set(shown) == {"␣"}:
        return " " * len(shown)
    lead = len(shown) - len(shown.lstrip("␣"))
    trail = len(shown) - len(shown.rstrip("␣"))
    body = shown[lead : len(shown) - trail]
    out = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _NAMED:
                out.append(_NAMED[nxt])
                i += 2
                continue
            width = {"x": 2, "u": 4}.get(nxt)
            digits = body[i + 2 : i + 2 + width] if width else ""
            if width and len(digits) == width and all(c in string.hexdigits for c in digits):
                out.append(chr(int(digits, 16)))
                i += 2 + width
                continue
        out.append(char)
        i += 1
    return " " * lead + "".join(out) + " " * trail


def is_byte_level(tokens: Sequence[str]) -> bool:
    """The module's test for a byte-level BPE vocabulary (see the module docstring)."""
    singles = set()
    for shown in tokens:
        if _SP_BYTE.fullmatch(shown):
            return False
        if len(shown) == 1:
            singles.add(shown)
    return _RAW_ONLY <= singles


def _is_fragment(shown: str) -> bool:
    if len(shown) < 2 or any(c not in _BYTE_OF for c in shown):
        return False
    try:
        bytes(_BYTE_OF[c] for c in shown).decode("utf-8")
        return False
    except UnicodeDecodeError:
        pass
    if any(c in _RAW_ONLY for c in shown):
        return True
    return any(
        "\u00c2" <= a <= "\u00f4" and "\u00a1" <= b <= "\u00bf"
        for a, b in zip(shown, shown[1:], strict=False)
    )


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _text_class(text: str) -> int:
    """Rules 6–17 on the text of a token."""
    if len(text) == 1:
        if text < "\u0021" or text == "\u007f":
            return _CODE["ASCII control/space"]
        if text in _PUNCT:
            return _CODE["ASCII punctuation"]
        if text in _DIGITS:
            return _CODE["ASCII digit"]
        if text in _LETTERS:
            return _CODE["ASCII letter"]
    if text and all(c.isspace() for c in text):
        return _CODE["whitespace"]
    body = text.lstrip(" ")
    if body.startswith("##"):
        body = body[2:]
    chars = set(body)
    if body and chars <= _DIGITS:
        return _CODE["number"]
    if body and chars <= _LETTERS:
        return _CODE["ASCII word"]
    if all(c in _PUNCT or c.isspace() for c in text) and any(c in _PUNCT for c in text):
        return _CODE["ASCII symbols"]
    if text.isascii():
        return _CODE["ASCII other"]
    visible = [c for c in body if not c.isspace()]
    if visible and all(_is_cjk(c) for c in visible):
        return _CODE["CJK"]
    if not any(c in _LETTERS or c in _DIGITS for c in text):
        return _CODE["other non-ASCII"]
    return _CODE["mixed"]


def reserved_ids(tokens: Sequence[str]) -> list[int]:
    """Ids whose display string is a placeholder slot, ``[unusedN]`` or ``<unusedN>``."""
    return [i for i, shown in enumerate(tokens) if _RESERVED.fullmatch(shown)]


def classify(
    tokens: Sequence[str],
    special_ids: Collection[int],
    no_token_ids: Collection[int] = (),
    *,
    byte_level: bool | None = None,
) -> np.ndarray:
    """Class code of every row, following the module's rules.

    Args:
        tokens: the V display strings, indexed by token id (``LoadedMatrix.tokens``).
        special_ids: ids of special tokens (``LoadedMatrix.special_ids``).
        no_token_ids: ids without a token (``LoadedMatrix.padding_rows``).
        byte_level: whether the vocabulary is byte-level BPE; None detects it with
            :func:`is_byte_level`.

    Returns:
        int8 array of length V; each value indexes :data:`CLASSES`.
    """
    special = set(special_ids)
    no_token = set(no_token_ids)
    if byte_level is None:
        byte_level = is_byte_level(tokens)
    seen_single: set[str] = set()
    codes = np.empty(len(tokens), dtype=np.int8)
    for row, shown in enumerate(tokens):
        codes[row] = _row_class(row, shown, special, no_token, byte_level, seen_single)
    return codes


def _row_class(
    row: int,
    shown: str,
    special: set[int],
    no_token: set[int],
    byte_level: bool,
    seen_single: set[str],
) -> int:
    first_spelling = False
    if byte_level and len(shown) == 1:
        first_spelling = shown not in seen_single
        seen_single.add(shown)
    if row in special:
        return _CODE["special"]
    if row in no_token:
        return _CODE["no token"]
    match = _NO_TOKEN.fullmatch(shown)
    if match and int(match.group(1) or match.group(2)) == row:
        return _CODE["no token"]
    if _RESERVED.fullmatch(shown):
        return _CODE["reserved"]
    if _SP_BYTE.fullmatch(shown):
        return _CODE["byte"]
    if byte_level:
        if first_spelling and shown in _RAW_BYTE_CHARS:
            return _CODE["byte"]
        if _is_fragment(shown):
            return _CODE["byte fragment"]
    return _text_class(unescape(shown))


@dataclass
class ClassRow:
    """One class's share of the valid rows and of the negative-pair endpoints.

    Attributes:
        name: the class name (an entry of :data:`CLASSES`).
        tokens: valid rows in the class.
        neg_endpoints: Σ neg_i over those rows.
        vocab_share: tokens / valid rows.
        neg_share: neg_endpoints / Σ neg_i over all valid rows; None when that sum is 0.
        enrichment: neg_share / vocab_share; None when neg_share is.
        mean_cos: mean over the class's valid rows of each row's mean cosine to its partners.
        neg_tokens: valid rows in the class with at least one negative partner.
    """

    name: str
    tokens: int
    neg_endpoints: int
    vocab_share: float
    neg_share: float | None
    enrichment: float | None
    mean_cos: float
    neg_tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def class_table(codes: np.ndarray, per_token: PerTokenResult) -> list[ClassRow]:
    """Negative-partner shares and enrichment of every class that holds a valid row.

    Args:
        codes: (V,) class codes from :func:`classify`.
        per_token: the per-token statistics of the same V rows.

    Returns:
        One :class:`ClassRow` per class with at least one valid row, in :data:`CLASSES` order.
    """
    codes = np.asarray(codes)
    if codes.shape != per_token.valid.shape:
        raise ValueError(f"codes has shape {codes.shape}, per_token has {len(per_token)} rows")
    rows = [group_row(name, codes == code, per_token) for code, name in enumerate(CLASSES)]
    return [row for row in rows if row is not None]


def group_row(name: str, member: np.ndarray, per_token: PerTokenResult) -> ClassRow | None:
    """The :class:`ClassRow` of any set of rows (a bool mask over the V rows); None if empty."""
    valid = np.asarray(per_token.valid, dtype=bool)
    member = valid & np.asarray(member, dtype=bool)
    count = int(member.sum())
    if count == 0:
        return None
    neg = np.where(valid, per_token.neg, 0).astype(np.int64)
    endpoints = int(neg[member].sum())
    vocab_share = count / int(valid.sum())
    neg_share = _share(endpoints, int(neg.sum()))
    return ClassRow(
        name=name,
        tokens=count,
        neg_endpoints=endpoints,
        vocab_share=vocab_share,
        neg_share=neg_share,
        enrichment=_ratio(neg_share, vocab_share),
        mean_cos=float(np.mean(per_token.mean[member])),
        neg_tokens=int((neg[member] > 0).sum()),
    )


@dataclass
class IdRange:
    """A run of consecutive token ids over-represented among negative partners.

    Attributes:
        start, end: first and last id of the range, inclusive; both are heavy rows.
        tokens: valid rows in [start, end].
        heavy: negative-heavy rows among them.
        neg_endpoints: Σ neg_i over the valid rows in the range.
        neg_share, vocab_share, enrichment: as defined in the module docstring.
        mean_neg: neg_endpoints / tokens.
    """

    start: int
    end: int
    tokens: int
    heavy: int
    neg_endpoints: int
    neg_share: float
    vocab_share: float
    enrichment: float
    mean_neg: float

    def to_dict(self) -> dict:
        return asdict(self)


def negative_ranges(
    per_token: PerTokenResult,
    *,
    top: int | None = 5,
    factor: float = 4.0,
    max_gap: int = 2,
    min_heavy: int = 3,
) -> list[IdRange]:
    """Contiguous id ranges whose tokens are the negative partners of unusually many tokens.

    Rule: let m be the mean of neg_i over the valid rows. A valid row is heavy when m > 0 and
    neg_i >= ``factor``·m. Heavy ids, in ascending order, are joined into one run while at most
    ``max_gap`` valid non-heavy rows lie between consecutive heavy ids (invalid rows in between
    are skipped over and never break a run). A run with at least ``min_heavy`` heavy rows gives
    the range [first heavy id, last heavy id]. Ranges are ranked by neg_endpoints, larger first,
    then by start.

    Args:
        per_token: per-token statistics over all V rows.
        top: how many ranges to return; None for all.
        factor: k, the multiple of the mean that makes a row heavy.
        max_gap: g, the non-heavy valid rows allowed between two heavy ids of one run.
        min_heavy: the fewest heavy rows a range must hold.

    Returns:
        Up to ``top`` :class:`IdRange`; empty when no valid row has a negative partner.
    """
    if factor <= 0 or max_gap < 0 or min_heavy < 1 or (top is not None and top < 0):
        raise ValueError("need factor > 0, max_gap >= 0, min_heavy >= 1 and top >= 0 or None")
    valid = np.asarray(per_token.valid, dtype=bool)
    neg = np.where(valid, per_token.neg, 0).astype(np.int64)
    n_valid = int(valid.sum())
    total_neg = int(neg.sum())
    if n_valid == 0 or total_neg == 0:
        return []
    heavy = valid & (neg >= factor * (total_neg / n_valid))
    heavy_ids = np.flatnonzero(heavy)
    # Valid non-heavy rows before each id: the gap between heavy ids a < b is a difference.
    plain_before = np.concatenate(([0], np.cumsum(valid & ~heavy)))
    valid_before = np.concatenate(([0], np.cumsum(valid)))
    neg_before = np.concatenate(([0], np.cumsum(neg)))

    runs = []
    first = 0
    for k in range(1, heavy_ids.size + 1):
        if k < heavy_ids.size:
            gap = plain_before[heavy_ids[k]] - plain_before[heavy_ids[k - 1] + 1]
            if gap <= max_gap:
                continue
        if k - first >= min_heavy:
            runs.append((int(heavy_ids[first]), int(heavy_ids[k - 1]), k - first))
        first = k

    ranges = []
    for start, end, n_heavy in runs:
        count = int(valid_before[end + 1] - valid_before[start])
        endpoints = int(neg_before[end + 1] - neg_before[start])
        neg_share = endpoints / total_neg
        vocab_share = count / n_valid
        ranges.append(
            IdRange(
                start=start,
                end=end,
                tokens=count,
                heavy=n_heavy,
                neg_endpoints=endpoints,
                neg_share=neg_share,
                vocab_share=vocab_share,
                enrichment=neg_share / vocab_share,
                mean_neg=endpoints / count,
            )
        )
    ranges.sort(key=lambda r: (-r.neg_endpoints, r.start))
    return ranges if top is None else ranges[:top]
