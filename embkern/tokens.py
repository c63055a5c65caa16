"""Readable display strings for the rows of an embedding matrix, one per token id.

A token is shown the way it reads in text, not the way the tokenizer stores it: byte-level BPE
(GPT-2 style, ``Ġthe``) and SentencePiece (``▁the``, ``<0x0A>``) pieces are decoded with the
matching decoder from :mod:`tokenizers.decoders`. Each token is decoded on its own, so the
decoder is rebuilt from the tokenizer's kind rather than taken whole from ``tokenizer.json``:
the full decoders of SentencePiece models strip the leading space of the first token
(``Metaspace``, ``Strip``), which would make ``▁the`` and ``the`` look the same.

Display rule, applied to every decoded token:

* a backslash is doubled, and control, format and separator characters other than the plain
  space are escaped: ``\\n``, ``\\t``, ``\\r``, ``\\xHH`` below U+0100, ``\\uHHHH`` above;
* each leading and each trailing space is shown as ``␣`` (``" the"`` → ``␣the``); inner spaces
  stay as they are, and the empty string is shown as ``""``;
* a token that decodes to U+FFFD (part of a multi-byte UTF-8 character, e.g. ``<0xE2>`` or
  ``âĢ``) is shown in its raw stored form instead;
* special and added tokens (``<|endoftext|>``, ``[CLS]``) and WordPiece pieces (``##ing``) are
  shown as stored.

Rows without a token: ``<row N: no token>`` for a row past the tokenizer's vocabulary (or an id
the vocabulary skips), ``#N`` for every row when no tokenizer was found at all.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders

from embkern.errors import InputError

# Categories that print as nothing or move the cursor: control (Cc), format (Cf, e.g. zero-width
# joiners and the BOM), line/paragraph separators and the exotic spaces (Zs other than ' ').
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Zs"})
_NAMED_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}
_VISIBLE_SPACE = "␣"
_REPLACEMENT_CHAR = "\ufffd"

# GGUF token types (llama.cpp's llama_token_type): 3 = control, 4 = user-defined. Both are
# stored as their literal text, never byte-level or '▁' encoded, so they are shown raw.
GGUF_CONTROL = 3
GGUF_USER_DEFINED = 4


@dataclass(frozen=True)
class TokenDisplay:
    """Display strings for every row of a matrix, and what the tokenizer said about them.

    Attributes:
        tokens: one display string per matrix row (length ``n_rows`` as requested).
        vocab_size: the tokenizer's vocabulary size (highest token id + 1), or None when there
            is no tokenizer.
        special_ids: ids of special/control tokens, ascending, all below ``n_rows``.
    """

    tokens: list[str]
    vocab_size: int | None
    special_ids: list[int]


def escape_token(text: str) -> str:
    """Make one decoded token printable on a single line, following the module's display rule.

    Args:
        text: the decoded token text.

    Returns:
        The display string (``" the\\n"`` → ``␣the\\n``).
    """
    if text == "":
        return '""'
    body = text.strip(" ")
    if body == "":
        return _VISIBLE_SPACE * len(text)
    lead = len(text) - len(text.lstrip(" "))
    trail = len(text) - len(text.rstrip(" "))
    return _VISIBLE_SPACE * lead + "".join(_escape_char(c) for c in body) + _VISIBLE_SPACE * trail


def _escape_char(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    if char == " " or unicodedata.category(char) not in _INVISIBLE_CATEGORIES:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def no_token_label(row: int) -> str:
    """Label of a row that has no token in the tokenizer's vocabulary: ``<row N: no token>``."""
    return f"<row {row}: no token>"


def without_tokenizer(n_rows: int) -> TokenDisplay:
    """Labels ``#0`` … ``#{n_rows-1}`` for a matrix that came without any tokenizer."""
    return TokenDisplay([f"#{row}" for row in range(n_rows)], None, [])


def decoder_for(kind: str | None) -> decoders.Decoder | None:
    """Build the single-token display decoder for a tokenizer kind.

    Args:
        kind: ``"byte_level"`` (GPT-2 style BPE, GGUF ``gpt2``), ``"sentencepiece"`` (``▁`` for
            spaces and ``<0xHH>`` byte fallback, GGUF ``llama``), or anything else / None.

    Returns:
        A decoder whose ``decode([raw_token])`` gives the token's text, or None when raw tokens
        are already readable (WordPiece and unknown kinds).
    """
    if kind == "byte_level":
        return decoders.ByteLevel()
    if kind == "sentencepiece":
        # No Strip/Metaspace here: they drop the leading space that tells '▁the' from 'the'.
        return decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        )
    return None


def display_tokens(
    raw_tokens: Sequence[str | None],
    n_rows: int,
    *,
    decoder: decoders.Decoder | None,
    raw_ids: Collection[int] = (),
) -> list[str]:
    """Turn stored token strings, indexed by id, into one display string per matrix row.

    Args:
        raw_tokens: the stored form of each token id (``"Ġthe"``, ``"▁the"``, ``"<0x0A>"``);
            None for an id the vocabulary skips. May be longer or shorter than ``n_rows``.
        n_rows: the matrix's row count V.
        decoder: from :func:`decoder_for`; None shows the stored form.
        raw_ids: ids shown in their stored form without decoding (special and added tokens).

    Returns:
        ``n_rows`` display strings; rows at or past ``len(raw_tokens)`` get
        ``<row N: no token>``.
    """
    shown = []
    for row, raw in enumerate(raw_tokens[:n_rows]):
        if raw is None:
            shown.append(no_token_label(row))
            continue
        text = raw
        if decoder is not None and row not in raw_ids:
            decoded = decoder.decode([raw])
            # A lone piece of a multi-byte character decodes to U+FFFD, which would make every
            # such piece look the same; the stored form at least tells them apart.
            if _REPLACEMENT_CHAR not in decoded:
                text = decoded
        shown.append(escape_token(text))
    shown.extend(no_token_label(row) for row in range(len(shown), n_rows))
    return shown


def from_tokenizer_json(path: str | Path, n_rows: int) -> TokenDisplay:
    """Display strings from a Hugging Face ``tokenizer.json``.

    Args:
        path: the ``tokenizer.json`` file.
        n_rows: the matrix's row count V.

    Returns:
        A :class:`TokenDisplay`; ``vocab_size`` is the highest id (added tokens included) + 1.

    Raises:
        InputError: the file cannot be read or parsed as a tokenizer.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        config = json.loads(text)
        tokenizer = Tokenizer.from_str(text)
    except Exception as exc:
        # tokenizers raises a plain Exception for a malformed file, so nothing narrower works.
        raise InputError(
            f"could not read tokenizer {path}: {_first_line(exc)}; "
            "fix or remove the file to use row numbers as labels"
        ) from exc

    vocab = tokenizer.get_vocab(with_added_tokens=True)
    vocab_size = max(vocab.values(), default=-1) + 1
    raw_tokens: list[str | None] = [None] * vocab_size
    for piece, token_id in vocab.items():
        raw_tokens[token_id] = piece

    added = config.get("added_tokens") or []
    added_ids = {entry["id"] for entry in added if isinstance(entry.get("id"), int)}
    special = sorted(entry["id"] for entry in added if entry.get("special") and "id" in entry)
    kind = _tokenizer_json_kind(config)
    shown = display_tokens(raw_tokens, n_rows, decoder=decoder_for(kind), raw_ids=added_ids)
    return TokenDisplay(shown, vocab_size, [i for i in special if i < n_rows])


def _tokenizer_json_kind(config: dict[str, Any]) -> str | None:
    """Guess the piece encoding from the decoder section (pre-tokenizer if there is none)."""
    for section in ("decoder", "pre_tokenizer"):
        parts = list(_walk_components(config.get(section)))
        types = {part.get("type") for part in parts}
        if "ByteLevel" in types:
            return "byte_level"
        replaces_metaspace = any(
            part.get("type") == "Replace" and (part.get("pattern") or {}).get("String") == "▁"
            for part in parts
        )
        if "Metaspace" in types or replaces_metaspace:
            return "sentencepiece"
    return None


def _walk_components(node: Any) -> Iterator[dict[str, Any]]:
    """Yield a decoder/pre-tokenizer config and, for ``Sequence`` ones, all of its members."""
    if not isinstance(node, dict):
        return
    yield node
    for key in ("decoders", "pretokenizers"):
        for child in node.get(key) or []:
            yield from _walk_components(child)


def from_gguf_vocab(
    raw_tokens: Sequence[str],
    token_types: Sequence[int] | None,
    tokenizer_model: str | None,
    n_rows: int,
) -> TokenDisplay:
    """Display strings from a GGUF file's ``tokenizer.ggml.*`` metadata.

    Args:
        raw_tokens: ``tokenizer.ggml.tokens``, the stored piece of each id.
        token_types: ``tokenizer.ggml.token_type`` (1 normal, 2 unknown, 3 control,
            4 user-defined, 5 unused, 6 byte), a sequence or int array, or None when absent.
        tokenizer_model: ``tokenizer.ggml.model``: ``gpt2`` is byte-level BPE, ``llama`` is
            SentencePiece; others (``bert``, ``t5``…) are shown as stored.
        n_rows: the matrix's row count V.

    Returns:
        A :class:`TokenDisplay` whose special ids are the control and user-defined tokens.
    """
    kind = {"gpt2": "byte_level", "llama": "sentencepiece"}.get(tokenizer_model or "")
    types = np.asarray(token_types if token_types is not None else [], dtype=np.int64)
    special = np.flatnonzero(np.isin(types, (GGUF_CONTROL, GGUF_USER_DEFINED))).tolist()
    shown = display_tokens(raw_tokens, n_rows, decoder=decoder_for(kind), raw_ids=set(special))
    return TokenDisplay(shown, len(raw_tokens), [i for i in special if i < n_rows])


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
