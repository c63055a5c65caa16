"""Token display strings: escaping, per-kind decoding, tokenizer.json and GGUF vocabularies."""

from __future__ import annotations

import time

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from embkern import tokens
from embkern.errors import InputError

# Byte-level BPE pieces: 'Ġ' is the byte-level form of ' ', 'Ċ' of '\n'; 'âĢ' is the first two
# bytes (E2 80) of a three-byte character such as '…', so it decodes to U+FFFD alone.
BYTE_LEVEL_PIECES = ["<|endoftext|>", "a", "b", "Ġthe", "Ċ", "âĢ", "the", "ĠĠ"]


def _byte_level_tokenizer(path, pieces=BYTE_LEVEL_PIECES, special=("<|endoftext|>",)):
    """Write a GPT-2 style tokenizer.json whose ids follow ``pieces``."""
    # Special tokens sit in the model vocabulary too, so add_special_tokens keeps their ids.
    vocab = {piece: i for i, piece in enumerate(pieces)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(special))
    tokenizer.save(str(path))
    return path


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("the", "the"),
        (" the", "␣the"),
        ("the  ", "the␣␣"),
        ("New York", "New York"),
        ("   ", "␣␣␣"),
        ("", '""'),
        ("\n", "\\n"),
        ("a\tb", "a\\tb"),
        ("\r\n", "\\r\\n"),
        ("\x00", "\\x00"),
        ("\x7f", "\\x7f"),
        ("\u00a0x", "\\xa0x"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("\u2028", "\\u2028"),
        ("back\\slash", "back\\\\slash"),
        (" \n ", "␣\\n␣"),
        ("héllo 😀", "héllo 😀"),
        ("##ing", "##ing"),
    ],
)
def test_escape_token_rule(text, shown):
    assert tokens.escape_token(text) == shown


def test_byte_level_pieces_decode_to_text_and_partial_bytes_stay_raw():
    shown = tokens.display_tokens(
        ["Ġthe", "Ċ", "âĢ", "ĠĠ", "the"], 5, decoder=tokens.decoder_for("byte_level")
    )
    assert shown == ["␣the", "\\n", "âĢ", "␣␣", "the"]


def test_sentencepiece_pieces_keep_their_leading_space_and_byte_fallback():
    shown = tokens.display_tokens(
        ["▁the", "the", "<0x0A>", "<0xE2>", "▁", "<s>"],
        6,
        decoder=tokens.decoder_for("sentencepiece"),
        raw_ids={5},
    )
    assert shown == ["␣the", "the", "\\n", "<0xE2>", "␣", "<s>"]


def test_gaps_and_rows_past_the_vocabulary_are_labelled():
    shown = tokens.display_tokens(["a", None, "c"], 5, decoder=None)
    assert shown == ["a", "<row 1: no token>", "c", "<row 3: no token>", "<row 4: no token>"]
    assert tokens.display_tokens(["a", "b", "c"], 2, decoder=None) == ["a", "b"]


def test_without_tokenizer_labels_rows_by_number():
    display = tokens.without_tokenizer(3)
    assert display.tokens == ["#0", "#1", "#2"]
    assert display.vocab_size is None
    assert display.special_ids == []


def test_byte_level_tokenizer_json(tmp_path):
    path = _byte_level_tokenizer(tmp_path / "tokenizer.json")
    display = tokens.from_tokenizer_json(path, n_rows=10)
    assert display.vocab_size == len(BYTE_LEVEL_PIECES)
    assert display.special_ids == [0]
    assert display.tokens[:8] == ["<|endoftext|>", "a", "b", "␣the", "\\n", "âĢ", "the", "␣␣"]
    assert display.tokens[8:] == ["<row 8: no token>", "<row 9: no token>"]


def test_wordpiece_tokenizer_json_keeps_pieces(tmp_path):
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "play": 3, "##ing": 4}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens(["[PAD]", "[UNK]", "[CLS]"])
    tokenizer.save(str(tmp_path / "tokenizer.json"))

    display = tokens.from_tokenizer_json(tmp_path / "tokenizer.json", n_rows=5)
    assert display.tokens == ["[PAD]", "[UNK]", "[CLS]", "play", "##ing"]
    assert display.special_ids == [0, 1, 2]


@pytest.mark.parametrize(
    "decoder",
    [
        # Llama/Gemma tokenizer.json: the Strip member would eat the '▁' of a lone token.
        decoders.Sequence(
            [
                decoders.Replace("▁", " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        ),
        # T5/older SentencePiece: Metaspace drops the leading space of the first token.
        decoders.Metaspace(),
    ],
    ids=["replace-strip", "metaspace"],
)
def test_sentencepiece_tokenizer_json_shows_leading_space(tmp_path, decoder):
    pieces = [("<unk>", 0.0), ("▁the", -1.0), ("the", -2.0), ("<0x0A>", -3.0)]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=True))
    tokenizer.decoder = decoder
    tokenizer.save(str(tmp_path / "tokenizer.json"))

    display = tokens.from_tokenizer_json(tmp_path / "tokenizer.json", n_rows=4)
    assert display.tokens == ["<unk>", "␣the", "the", "\\n"]


def test_broken_tokenizer_json_is_an_input_error(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": {"type": "BPE", "vocab": ')
    with pytest.raises(InputError, match="tokenizer.json"):
        tokens.from_tokenizer_json(path, n_rows=4)


def test_gguf_vocab_gpt2_with_control_and_user_defined_tokens():
    pieces = ["<|endoftext|>", "Ġhello", "Ċ", "<tool>", "x"]
    types = [3, 1, 1, 4, 1]
    display = tokens.from_gguf_vocab(pieces, types, "gpt2", n_rows=6)
    assert display.tokens == ["<|endoftext|>", "␣hello", "\\n", "<tool>", "x", "<row 5: no token>"]
    assert display.special_ids == [0, 3]
    assert display.vocab_size == 5


def test_gguf_vocab_llama_and_unknown_kinds():
    pieces = ["<unk>", "<s>", "▁world", "<0x09>", "<0xF0>"]
    llama = tokens.from_gguf_vocab(pieces, [2, 3, 1, 6, 6], "llama", n_rows=5)
    assert llama.tokens == ["<unk>", "<s>", "␣world", "\\t", "<0xF0>"]
    assert llama.special_ids == [1]
    raw = tokens.from_gguf_vocab(["[CLS]", "##s"], None, "bert", n_rows=2)
    assert raw.tokens == ["[CLS]", "##s"]
    assert raw.special_ids == []


def test_a_262k_vocabulary_displays_in_a_few_seconds(tmp_path):
    # Takes 2-5 s on 2 busy cores; the bound catches per-token work gone quadratic or slow
    # (Gemma 3 has 262144 tokens), not small regressions.
    pieces = [f"Ġtok{i}" if i % 2 else f"▁piece{i}\n" for i in range(262_144)]
    path = _byte_level_tokenizer(tmp_path / "tokenizer.json", pieces=pieces, special=())
    start = time.perf_counter()
    display = tokens.from_tokenizer_json(path, n_rows=262_144)
    elapsed = time.perf_counter() - start
    assert display.tokens[1] == "␣tok1"
    assert elapsed < 15.0, f"displaying 262144 tokens took {elapsed:.1f} s"
