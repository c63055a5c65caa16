"""Load one embedding matrix X (V×d) and a display string per row from a model on disk or hub.

Sources, tried in this order by :func:`load`: a packaged short name (:mod:`embkern.models`); an
existing file (``.safetensors``, ``.gguf``, ``.npy``, ``.pt``/``.pth``/``.bin``, or a
``model.safetensors.index.json``) or model folder; a Hugging Face repo id ``org/name[@rev]``,
fetched file by file through the hub cache (``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` apply).

Design and its limits:

* X is not copied where the format allows it: ``.npy`` is a copy-on-write memory map (private
  pages, so the tensor is writable without touching the file and torch need not warn about a
  read-only buffer), safetensors come from ``safe_open``, ``.pt`` zip checkpoints are loaded with
  ``mmap=True``, and GGUF F32/F16/BF16 tensors are views of a copy-on-write map of the file.
* GGUF quantized tensors are dequantized with ``gguf.quants`` into float32, in chunks of rows so
  the temporaries stay small: the result costs V·d·4 bytes (671 MB for Gemma 3's 262144×640).
* GGUF files are opened with ``gguf.GGUFReader``, which keeps a numpy view per metadata
  element: Gemma 3's 262144-token vocabulary takes it ~10-15 s on 2 cores, most of that load
  (a hand-written header parser did it in 0.5 s, but the format is the library's to keep).
  Only GGUF in the machine's byte order is read.
* Only safetensors are fetched from the hub (a sharded index opens only the shard holding the
  chosen tensor); other formats must be downloaded and passed as a local path.
* float64 is kept (so that :mod:`embkern.prepare` can rescale rows of extreme norm before
  rounding to fp32); other float dtypes (float8) are converted to float32.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import json
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from safetensors import SafetensorError, safe_open

from embkern import tokens as token_display
from embkern.errors import InputError
from embkern.models import PACKAGED_MODELS, resolve_packaged

__all__ = ["EMBEDDING_SUFFIXES", "LM_HEAD_SUFFIXES", "SUPPORTED_EXTENSIONS", "LoadedMatrix", "load"]

log = logging.getLogger(__name__)
# Quiet by default: without a handler, warnings would reach stderr through logging.lastResort.
log.addHandler(logging.NullHandler())

#: Tensor-name endings of input embeddings across architectures (Llama/Mistral/Qwen/Gemma,
#: GPT-2, BERT/BLOOM, GGUF, Meta's original Llama, GPT-NeoX, T5), after any wrapper prefix.
EMBEDDING_SUFFIXES = (
    "embed_tokens.weight",
    "wte.weight",
    "word_embeddings.weight",
    "token_embd.weight",
    "tok_embeddings.weight",
    "embed_in.weight",
    "shared.weight",
)
#: Tensor-name endings of output embeddings (the unembedding / LM head).
LM_HEAD_SUFFIXES = ("lm_head.weight", "output.weight", "embed_out.weight")
#: File extension → format name.
SUPPORTED_EXTENSIONS = {
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".npy": "npy",
    ".pt": "pt",
    ".pth": "pt",
    ".bin": "pt",
}

_INDEX_NAME = "model.safetensors.index.json"
_FOLDER_PREFERENCE = (_INDEX_NAME, "model.safetensors", "pytorch_model.bin")
# Name parts of vision/audio towers in multimodal checkpoints: their embeddings lose to text.
_NON_TEXT_MARKERS = ("vision", "visual", "image", "audio", "speech", "patch", "mm_proj")
_KEPT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_MAX_CANDIDATES = 20
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# Weights files named after the format rather than the model: show their folder's name instead.
_GENERIC_STEM = re.compile(r"^(model|pytorch_model|consolidated)(-\d+-of-\d+|\.\d+)?$")
# 1M float32 elements (4 MB) per dequantization chunk: large enough to amortize numpy's per-call
# cost, small enough for gguf's temporaries to stay in cache. Gemma 3's 262144×640 Q8_0 matrix
# takes ~0.5 s this way against ~2.7 s in a single call (2-core machine).
_DEQUANT_CHUNK_ELEMENTS = 1 << 20


@dataclass
class LoadedMatrix:
    """An embedding matrix and what is known about its rows.

    Attributes:
        matrix: X, shape (V, d), float32/float16/bfloat16 as stored (GGUF quantized types are
            dequantized to float32); memory-mapped where the format allows.
        tokens: V display strings (see :mod:`embkern.tokens`).
        source: what the user passed to :func:`load`.
        path: the file X was read from.
        tensor_name: name of X inside that file (``"(array)"`` for ``.npy``, ``"(tensor)"`` for a
            ``.pt`` holding a bare tensor).
        format: ``"safetensors"``, ``"gguf"``, ``"npy"`` or ``"pt"``.
        name: short display name (packaged short name, repo name, model folder or file stem).
        vocab_size: tokenizer vocabulary size (highest id + 1), None without a tokenizer.
        padding_rows: row ids >= vocab_size, ascending.
        special_ids: special/control token ids below V, ascending.
    """

    matrix: torch.Tensor = field(repr=False)
    tokens: list[str] = field(repr=False)
    source: str
    path: str
    tensor_name: str
    format: str
    name: str
    vocab_size: int | None
    padding_rows: list[int] = field(repr=False)
    special_ids: list[int] = field(repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """(V, d)."""
        return (int(self.matrix.shape[0]), int(self.matrix.shape[1]))


@dataclass
class _Found:
    """A matrix located in a file, before validation and token display."""

    matrix: torch.Tensor
    path: Path
    tensor_name: str
    format: str
    tokenizer_json: Path | None = None
    # (tokenizer.ggml.tokens, tokenizer.ggml.token_type, tokenizer.ggml.model) of a GGUF file.
    gguf_vocab: tuple[list[str], Any, str | None] | None = None


def load(
    source: str | os.PathLike[str],
    *,
    tensor: str | None = None,
    lm_head: bool = False,
    revision: str | None = None,
) -> LoadedMatrix:
    """Load an embedding matrix and its token strings.

    Args:
        source: a packaged short name (``smollm2``, ``gemma3-270m``, ``minilm``), a file, a model
            folder, or a Hugging Face repo id ``org/name`` with optional ``@revision``.
        tensor: exact tensor name to load instead of the automatic choice.
        lm_head: load the output embedding (``lm_head.weight``, ``output.weight``,
            ``embed_out.weight``) instead of the input one.
        revision: hub branch, tag or commit; only for repo ids.

    Returns:
        A :class:`LoadedMatrix` with X of shape (V, d), V >= 2, d >= 1.

    Raises:
        InputError: the source is missing, unreadable, or holds no usable V×d float matrix.
    """
    text = os.fspath(source)
    packaged = resolve_packaged(text) if isinstance(source, str) else None
    if packaged is not None:
        _refuse_revision(revision, text)
        found = _load_path(Path(packaged), tensor, lm_head)
        return _finish(found, text, text.strip().lower())

    path = Path(text).expanduser()
    if path.exists():
        _refuse_revision(revision, text)
        found = _load_path(path, tensor, lm_head)
        return _finish(found, text, _display_name(path))

    repo = _parse_repo_id(text, revision) if isinstance(source, str) else None
    if repo is None:
        raise InputError(
            f"no such file or folder: {text}; pass a {_extension_list()} file, a model folder, "
            f"a Hugging Face repo id (org/name) or a packaged model ({', '.join(PACKAGED_MODELS)})"
        )
    repo_id, repo_revision = repo
    found = _load_repo(text, repo_id, repo_revision, tensor, lm_head)
    return _finish(found, text, repo_id.split("/")[1])


def _refuse_revision(revision: str | None, source: str) -> None:
    if revision is not None:
        raise InputError(
            f"revision= (--revision) applies only to Hugging Face repo ids; '{source}' is a "
            "local path or packaged model: drop the revision"
        )


def _extension_list() -> str:
    return "/".join(SUPPORTED_EXTENSIONS)


def _display_name(path: Path) -> str:
    path = Path(os.path.abspath(path))
    if path.is_dir():
        return path.name
    stem = path.name.split(".safetensors.index.json")[0] if path.suffix == ".json" else path.stem
    return path.parent.name if _GENERIC_STEM.match(stem) and path.parent.name else stem


# ---------------------------------------------------------------------------------------------
# Validation and the final LoadedMatrix
# ---------------------------------------------------------------------------------------------


def _check_shape(shape: Sequence[int], where: str) -> None:
    """Raise unless ``shape`` is a usable (V, d): 2-D, non-empty, V >= 2."""
    if len(shape) != 2:
        raise InputError(
            f"{where} has shape {list(shape)}: an embedding matrix must be 2-D (V×d); "
            "name the right tensor with tensor= (--tensor)"
        )
    n_rows, n_cols = shape
    if n_rows == 0 or n_cols == 0:
        raise InputError(f"{where} is empty (shape {n_rows}×{n_cols}); nothing to analyse")
    if n_rows < 2:
        raise InputError(
            f"{where} has a single row (shape {n_rows}×{n_cols}); token pairs need V >= 2"
        )


def _check_dtype(dtype: torch.dtype, where: str) -> None:
    if not dtype.is_floating_point:
        raise InputError(
            f"{where} has dtype {str(dtype).removeprefix('torch.')}; an embedding matrix holds "
            "floating-point values: name another tensor with tensor= (--tensor)"
        )


def _finish(found: _Found, source: str, name: str) -> LoadedMatrix:
    """Validate X, settle its dtype and attach the token display strings."""
    where = f"tensor '{found.tensor_name}' in {found.path}"
    matrix = found.matrix
    _check_shape(tuple(matrix.shape), where)
    _check_dtype(matrix.dtype, where)
    if matrix.dtype not in _KEPT_DTYPES:
        log.info("converting %s from %s to float32", where, matrix.dtype)
        matrix = matrix.to(torch.float32)

    n_rows = matrix.shape[0]
    if found.gguf_vocab is not None:
        display = token_display.from_gguf_vocab(*found.gguf_vocab, n_rows)
    elif found.tokenizer_json is not None:
        display = token_display.from_tokenizer_json(found.tokenizer_json, n_rows)
    else:
        display = token_display.without_tokenizer(n_rows)
    vocab_size = display.vocab_size
    if vocab_size is not None and vocab_size > n_rows:
        log.warning(
            "the tokenizer has %d tokens but %s has only %d rows; is it the right tokenizer?",
            vocab_size,
            where,
            n_rows,
        )
    padding = list(range(vocab_size, n_rows)) if vocab_size is not None else []

    return LoadedMatrix(
        matrix=matrix,
        tokens=display.tokens,
        source=source,
        path=os.path.abspath(found.path),
        tensor_name=found.tensor_name,
        format=found.format,
        name=name,
        vocab_size=vocab_size,
        padding_rows=padding,
        special_ids=display.special_ids,
    )


# ---------------------------------------------------------------------------------------------
# Choosing the tensor
# ---------------------------------------------------------------------------------------------


def _ends_with(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def _is_inside_layer(name: str) -> bool:
    # Embeddings and heads sit outside the numbered blocks; this keeps 'blk.3.attn_output.weight'
    # or 'layer.0.output.weight' from passing as an output embedding.
    return any(part.isdigit() for part in name.split("."))


def _is_non_text(name: str) -> bool:
    lowered = name.lower()
    return any(marker in lowered for marker in _NON_TEXT_MARKERS)


def _pick_tensor(
    names: Sequence[str],
    *,
    requested: str | None,
    lm_head: bool,
    where: str,
    shapes: Mapping[str, Sequence[int]] | None = None,
    config: Path | None = None,
) -> str:
    """Choose the tensor to load among ``names``.

    Args:
        names: every tensor name in the file (or index).
        requested: the user's tensor= name, which wins when present.
        lm_head: look for the output embedding instead of the input one.
        where: the file, for messages.
        shapes: shape of each name where known cheaply (None for a hub index).
        config: ``config.json`` beside the weights, quoted when the LM head is tied.

    Returns:
        The chosen name. Among several matches, text beats vision/audio, 2-D beats other ranks,
        then the shortest name wins (wrappers such as ``model.`` make names longer).
    """
    if requested is not None:
        if requested in names:
            return requested
        candidates = _candidate_text(names, shapes, requested)
        raise InputError(f"tensor '{requested}' not found in {where}; {candidates}")

    suffixes = LM_HEAD_SUFFIXES if lm_head else EMBEDDING_SUFFIXES
    found = [
        n for n in names if not _is_inside_layer(n) and any(_ends_with(n, s) for s in suffixes)
    ]
    found = [n for n in found if not _is_non_text(n)] or found
    if shapes is not None:
        found = [n for n in found if len(shapes[n]) == 2] or found
    if found:
        found.sort(key=lambda n: (len(n), n))
        if len(found) > 1:
            log.info("picked tensor '%s' in %s; other matches: %s", found[0], where, found[1:])
        else:
            log.info("picked tensor '%s' in %s", found[0], where)
        return found[0]

    if lm_head:
        raise InputError(
            f"{where} has no separate output embedding (none of {', '.join(LM_HEAD_SUFFIXES)}): "
            f"the output embedding is tied to the input one{_tie_note(config)}; drop lm_head "
            "(--lm-head) to analyse the shared matrix"
        )
    matrices = [n for n in names if shapes is not None and len(shapes[n]) == 2]
    if len(matrices) == 1:
        # A file holding a single matrix needs no naming convention.
        log.info("picked the only 2-D tensor '%s' in %s", matrices[0], where)
        return matrices[0]
    raise InputError(
        f"no input embedding found in {where} (no tensor name ends in "
        f"{', '.join(EMBEDDING_SUFFIXES)}); {_candidate_text(names, shapes, None)}"
    )


def _candidate_text(
    names: Sequence[str], shapes: Mapping[str, Sequence[int]] | None, requested: str | None
) -> str:
    """'2-D tensors: a [V, d], …; pass one with tensor= (--tensor)', close matches first."""
    pool = [n for n in names if shapes is None or len(shapes[n]) == 2]
    if not pool:
        return "the file holds no 2-D tensor"
    close = difflib.get_close_matches(requested, pool, n=5, cutoff=0.5) if requested else []
    ordered = close + sorted((n for n in pool if n not in close), key=_natural_key)
    shown = [n if shapes is None else f"{n} {list(shapes[n])}" for n in ordered[:_MAX_CANDIDATES]]
    more = len(ordered) - len(shown)
    listing = ", ".join(shown) + (f" and {more} more" if more else "")
    kind = "tensors" if shapes is None else "2-D tensors"
    return f"{kind} there: {listing}; pass one with tensor= (--tensor)"


def _natural_key(name: str) -> list[Any]:
    """Sort key that puts 'layer2' before 'layer10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _tie_note(config: Path | None) -> str:
    """' (config.json: tie_word_embeddings=true)' when the config says so, else ''."""
    if config is None or not config.is_file():
        return ""
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    for section in (settings, settings.get("text_config") or {}):
        if isinstance(section, dict) and "tie_word_embeddings" in section:
            value = json.dumps(section["tie_word_embeddings"])
            return f" (config.json: tie_word_embeddings={value})"
    return ""


# ---------------------------------------------------------------------------------------------
# Local files and folders
# ---------------------------------------------------------------------------------------------


def _load_path(path: Path, tensor: str | None, lm_head: bool) -> _Found:
    if path.is_dir():
        return _load_folder(path, tensor, lm_head)
    if path.name.endswith(".safetensors.index.json"):
        return _load_index(path, tensor, lm_head, _local_shard(path.parent))
    fmt = SUPPORTED_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"{path}: unknown file type '{path.suffix}'; embkern reads {_extension_list()} files, "
            "model folders and model.safetensors.index.json"
        )
    loader = {"safetensors": _load_safetensors, "gguf": _load_gguf, "npy": _load_npy}
    return loader.get(fmt, _load_pt)(path, tensor, lm_head)


def _load_folder(folder: Path, tensor: str | None, lm_head: bool) -> _Found:
    for preferred in _FOLDER_PREFERENCE:
        if (folder / preferred).is_file():
            return _load_path(folder / preferred, tensor, lm_head)
    weights = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS
    )
    if len(weights) == 1:
        return _load_path(weights[0], tensor, lm_head)
    found = ", ".join(p.name for p in weights) if weights else "none"
    raise InputError(
        f"folder {folder} has no model file to pick: expected {' or '.join(_FOLDER_PREFERENCE)}, "
        f"or a single {_extension_list()} file (found: {found}); pass the file itself"
    )


def _beside(path: Path, name: str) -> Path | None:
    candidate = path.parent / name
    return candidate if candidate.is_file() else None


def _local_shard(folder: Path) -> Callable[[str], Path]:
    def shard(filename: str) -> Path:
        path = folder / filename
        if not path.is_file():
            raise InputError(f"shard {path} listed in {_INDEX_NAME} is missing; download it")
        return path

    return shard


def _load_index(
    index: Path,
    tensor: str | None,
    lm_head: bool,
    fetch_shard: Callable[[str], Path],
    *,
    tokenizer_json: Path | None = None,
    config: Path | None = None,
) -> _Found:
    """Resolve the tensor through a sharded index and open only the shard that holds it."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"could not read the shard index {index}: {exc!r}; it should be JSON with a "
            "'weight_map' from tensor names to shard files"
        ) from exc
    config = config or _beside(index, "config.json")
    name = _pick_tensor(
        list(weight_map), requested=tensor, lm_head=lm_head, where=str(index), config=config
    )
    shard = fetch_shard(weight_map[name])
    tokenizer_json = tokenizer_json or _beside(index, "tokenizer.json")
    return _load_safetensors(shard, name, lm_head, tokenizer_json=tokenizer_json, config=config)


def _load_safetensors(
    path: Path,
    tensor: str | None,
    lm_head: bool,
    *,
    tokenizer_json: Path | None = None,
    config: Path | None = None,
) -> _Found:
    config = config or _beside(path, "config.json")
    try:
        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())
            # get_slice reads the header only, so shapes cost nothing even for big checkpoints.
            shapes = {n: tuple(handle.get_slice(n).get_shape()) for n in names}
            name = _pick_tensor(
                names,
                requested=tensor,
                lm_head=lm_head,
                where=str(path),
                shapes=shapes,
                config=config,
            )
            where = f"tensor '{name}' in {path}"
            _check_shape(shapes[name], where)
            stored = handle.get_slice(name).get_dtype()
            if not (stored.startswith("F") or stored == "BF16"):
                raise InputError(
                    f"{where} has dtype {stored}; an embedding matrix holds floating-point "
                    "values: name another tensor with tensor= (--tensor)"
                )
            matrix = handle.get_tensor(name)
    except (SafetensorError, OSError) as exc:
        raise InputError(
            f"could not read {path} as safetensors ({exc}); the file is truncated or corrupt: "
            "download or save it again"
        ) from exc
    return _Found(
        matrix,
        path,
        name,
        "safetensors",
        tokenizer_json=tokenizer_json or _beside(path, "tokenizer.json"),
    )


def _refuse_tensor_choice(path: Path, tensor: str | None, lm_head: bool) -> None:
    """A file holding one bare matrix has no names to choose from."""
    if tensor is not None:
        raise InputError(f"{path} holds a single unnamed matrix; drop tensor= (--tensor)")
    if lm_head:
        raise InputError(
            f"{path} holds a single matrix, with no separate output embedding; drop lm_head "
            "(--lm-head)"
        )


def _load_npy(path: Path, tensor: str | None, lm_head: bool) -> _Found:
    _refuse_tensor_choice(path, tensor, lm_head)
    try:
        array = np.load(path, mmap_mode="c", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(
            f"could not read {path} as a .npy array ({_first_line(exc)}); the file is truncated "
            "or not written by numpy.save"
        ) from exc
    if not isinstance(array, np.ndarray):
        raise InputError(
            f"{path} is an .npz archive, not an .npy array; save one array with np.save"
        )

    where = f"array in {path}"
    _check_shape(array.shape, where)
    if array.dtype.kind != "f" or array.dtype.itemsize > 8:
        raise InputError(
            f"{where} has dtype {array.dtype}; an embedding matrix holds float16/32/64 values"
        )
    if not array.dtype.isnative:
        # torch only maps native byte order; a byte-swapped copy is the one copy we cannot avoid.
        array = array.astype(array.dtype.newbyteorder("="))
    return _Found(
        torch.from_numpy(array),
        path,
        "(array)",
        "npy",
        tokenizer_json=_beside(path, "tokenizer.json"),
    )


def _load_pt(path: Path, tensor: str | None, lm_head: bool) -> _Found:
    # mmap needs the zip format of torch.save; legacy pickle files are read into memory.
    use_mmap = zipfile.is_zipfile(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as exc:
        # torch's own message suggests weights_only=False, i.e. running the file's code: not here.
        raise InputError(
            f"could not read {path} as a PyTorch checkpoint: torch.load(weights_only=True) "
            "refused it, so it is corrupt or holds Python objects besides tensors; save the "
            "tensor or state dict alone (or as .safetensors/.npy)"
        ) from exc
    except Exception as exc:
        # torch.load surfaces damage as RuntimeError, EOFError, OSError and more.
        raise InputError(
            f"could not read {path} as a PyTorch checkpoint ({type(exc).__name__}: "
            f"{_first_line(exc)}); the file is truncated or corrupt: save it again"
        ) from exc

    tokenizer_json = _beside(path, "tokenizer.json")
    if isinstance(loaded, torch.Tensor):
        _refuse_tensor_choice(path, tensor, lm_head)
        return _Found(loaded, path, "(tensor)", "pt", tokenizer_json=tokenizer_json)
    if not isinstance(loaded, Mapping):
        raise InputError(
            f"{path} holds a {type(loaded).__name__}; expected a tensor or a state dict"
        )
    state = dict(_flatten_state(loaded))
    if not state:
        raise InputError(f"{path} holds no tensors")
    shapes = {n: tuple(t.shape) for n, t in state.items()}
    name = _pick_tensor(
        list(state),
        requested=tensor,
        lm_head=lm_head,
        where=str(path),
        shapes=shapes,
        config=_beside(path, "config.json"),
    )
    return _Found(state[name], path, name, "pt", tokenizer_json=tokenizer_json)


def _flatten_state(state: Mapping[Any, Any], prefix: str = "") -> Any:
    """Yield (dotted name, tensor) for the tensors of a possibly nested state dict."""
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, Mapping):
            # Training checkpoints nest the weights ({'state_dict': {...}, 'step': 3}).
            yield from _flatten_state(value, name + ".")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------------------------

_GGML_INTEGER_TYPES = {"I8", "I16", "I32", "I64"}
# What gguf.GGUFReader raises on a damaged or foreign file: it reads past the end of its map
# as empty arrays (IndexError on the first element) and refuses bad magic, versions, value
# types, UTF-8 and tensor sizes with ValueError (KeyError for duplicate keys).
_GGUF_READER_ERRORS = (ValueError, IndexError, KeyError, OverflowError)
# GGML float types read in place, as the numpy dtype of their bits.
_GGUF_FLOAT_VIEWS = {
    gguf.GGMLQuantizationType.F32: np.float32,
    gguf.GGMLQuantizationType.F16: np.float16,
    gguf.GGMLQuantizationType.F64: np.float64,
    gguf.GGMLQuantizationType.BF16: np.int16,
}
_ARRAY = gguf.GGUFValueType.ARRAY
_STRING = gguf.GGUFValueType.STRING


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector, resuming it only if it was running."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _load_gguf(path: Path, tensor: str | None, lm_head: bool) -> _Found:
    # GGUFReader holds numpy views per vocabulary element (about a million for Gemma 3), none
    # of them in a cycle: collector passes over them cost a quarter of the parse. The reader
    # is dropped inside _read_gguf, before the collector resumes.
    with _collector_paused():
        tensors, gguf_vocab = _read_gguf(path)
    shapes = {name: _gguf_shape(t) for name, t in tensors.items()}
    name = _pick_tensor(
        list(shapes), requested=tensor, lm_head=lm_head, where=str(path), shapes=shapes
    )
    matrix = _gguf_matrix(tensors[name], shapes[name], f"tensor '{name}' in {path}")
    if gguf_vocab is not None:
        return _Found(matrix, path, name, "gguf", gguf_vocab=gguf_vocab)
    return _Found(matrix, path, name, "gguf", tokenizer_json=_beside(path, "tokenizer.json"))


def _read_gguf(
    path: Path,
) -> tuple[dict[str, gguf.ReaderTensor], tuple[list[str], Any, str | None] | None]:
    """Tensors by name, and (tokens, token types, tokenizer model) when the file has a vocabulary.

    Tensor data are views of a copy-on-write map of the file (mode 'c'): private pages, so
    tensors built on them are writable without ever writing to the file (torch warns on
    read-only numpy buffers).
    """
    try:
        reader = gguf.GGUFReader(path, "c")
    except OSError as exc:
        raise InputError(f"could not read {path} ({exc})") from exc
    except _GGUF_READER_ERRORS as exc:
        raise InputError(
            f"could not read {path} as GGUF with gguf {_gguf_version()} ({type(exc).__name__}: "
            f"{_first_line(exc)}); the file is truncated, corrupt or not GGUF v2/v3: download "
            "or convert it again (or upgrade gguf if the file uses a newer type)"
        ) from exc
    if reader.byte_order != "I":
        # The reader would swap metadata, but quantized blocks and torch tensors assume the
        # machine's order.
        raise InputError(
            f"{path} is stored in the byte order opposite to this machine's (a big-endian GGUF "
            "on a little-endian machine); convert the model again without --bigendian"
        )

    tensors = {t.name: t for t in reader.tensors}
    tokens = _gguf_strings(reader.fields.get("tokenizer.ggml.tokens"))
    if not tokens:
        return tensors, None
    token_types = _gguf_numbers(reader.fields.get("tokenizer.ggml.token_type"))
    kind = _gguf_string(reader.fields.get("tokenizer.ggml.model"))
    return tensors, (tokens, token_types, kind)


def _gguf_strings(field: gguf.ReaderField | None) -> list[str]:
    """The values of a string-array metadata field; [] when absent or of another type."""
    if field is None or field.types != [_ARRAY, _STRING]:
        return []
    # Not field.contents(): it decodes strictly, and vocabularies may hold invalid UTF-8
    # pieces; U+FFFD makes tokens.py show them raw. tobytes() is the cheapest copy of a view.
    return [field.parts[i].tobytes().decode("utf-8", errors="replace") for i in field.data]


def _gguf_numbers(field: gguf.ReaderField | None) -> np.ndarray | None:
    """A numeric-array metadata field as one array (None when absent or of another type)."""
    if field is None or field.types[:1] != [_ARRAY] or field.types[-1] in (_ARRAY, _STRING):
        return None
    if not field.data:
        return np.empty(0, np.int64)
    # One view per element in the reader; a single concatenate gathers them.
    return np.concatenate([field.parts[i] for i in field.data])


def _gguf_string(field: gguf.ReaderField | None) -> str | None:
    if field is None or field.types != [_STRING]:
        return None
    return field.parts[field.data[0]].tobytes().decode("utf-8", errors="replace")


def _gguf_shape(tensor: gguf.ReaderTensor) -> tuple[int, ...]:
    # GGML lists the fastest-varying dimension first: (d, V) for an embedding.
    return tuple(reversed(tensor.shape.tolist()))


def _gguf_matrix(tensor: gguf.ReaderTensor, shape: tuple[int, ...], where: str) -> torch.Tensor:
    """X of shape (V, d): a view for F32/F16/BF16/F64, dequantized float32 for quantized types."""
    _check_shape(shape, where)
    qtype = tensor.tensor_type
    if qtype.name in _GGML_INTEGER_TYPES:
        raise InputError(f"{where} has integer type {qtype.name}; an embedding matrix is float")

    # Reshaped here because older gguf releases hand every tensor over flat.
    rows = tensor.data.reshape(shape[0], -1)
    float_view = _GGUF_FLOAT_VIEWS.get(qtype)
    if float_view is not None:
        matrix = torch.from_numpy(rows.view(float_view))
        # numpy has no bfloat16: its bits travel as int16 and are reinterpreted in torch.
        return matrix.view(torch.bfloat16) if qtype == gguf.GGMLQuantizationType.BF16 else matrix
    return torch.from_numpy(_dequantize(rows, qtype, shape[1], where))


def _dequantize(
    rows: np.ndarray, qtype: gguf.GGMLQuantizationType, n_cols: int, where: str
) -> np.ndarray:
    """Quantized rows (V, row_bytes) uint8 → (V, n_cols) float32, a chunk of rows at a time."""
    out = np.empty((rows.shape[0], n_cols), dtype=np.float32)
    chunk = max(1, _DEQUANT_CHUNK_ELEMENTS // n_cols)
    for first in range(0, rows.shape[0], chunk):
        try:
            out[first : first + chunk] = gguf.quants.dequantize(rows[first : first + chunk], qtype)
        except NotImplementedError as exc:
            raise InputError(
                f"{where} is quantized as {qtype.name}, which gguf {_gguf_version()} cannot "
                "dequantize; re-convert the model with another type (e.g. Q8_0 or F16)"
            ) from exc
        except ValueError as exc:
            raise InputError(f"{where} could not be dequantized as {qtype.name} ({exc})") from exc
    return out


def _gguf_version() -> str:
    try:
        return package_version("gguf")
    except PackageNotFoundError:
        return "(unknown version)"


# ---------------------------------------------------------------------------------------------
# Hugging Face hub
# ---------------------------------------------------------------------------------------------


def _parse_repo_id(text: str, revision: str | None) -> tuple[str, str | None] | None:
    """('org/name', revision) when ``text`` reads as a repo id, else None."""
    repo_id, at, inline = text.partition("@")
    if not _REPO_ID.match(repo_id) or (at and not inline):
        return None
    if Path(repo_id).suffix.lower() in SUPPORTED_EXTENSIONS:
        return None  # 'weights/emb.npy' that does not exist is a missing file, not a repo
    if at:
        if revision is not None and revision != inline:
            raise InputError(
                f"'{text}' names revision '{inline}' but revision='{revision}' was also given; "
                "keep one"
            )
        revision = inline
    return repo_id, revision


def _load_repo(
    source: str, repo_id: str, revision: str | None, tensor: str | None, lm_head: bool
) -> _Found:
    """Fetch config, tokenizer, index and the one shard holding the tensor, then load it."""
    last_miss: list[Exception] = []

    def fetch(filename: str) -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision))
        except EntryNotFoundError as exc:
            # Absent from the repo, or (offline / unreachable) absent from the cache.
            last_miss.append(exc)
            return None
        except (OSError, ValueError) as exc:
            raise _hub_error(source, repo_id, revision, filename, exc) from exc

    def fetch_shard(filename: str) -> Path:
        shard = fetch(filename)
        if shard is None:
            raise _hub_error(source, repo_id, revision, filename, last_miss[-1])
        return shard

    config = fetch("config.json")
    tokenizer_json = fetch("tokenizer.json")
    index = fetch(_INDEX_NAME)
    if index is not None:
        return _load_index(
            index, tensor, lm_head, fetch_shard, tokenizer_json=tokenizer_json, config=config
        )
    single = fetch("model.safetensors")
    if single is None:
        raise _hub_error(
            source, repo_id, revision, f"model.safetensors (or {_INDEX_NAME})", last_miss[-1]
        )
    return _load_safetensors(single, tensor, lm_head, tokenizer_json=tokenizer_json, config=config)


def _hub_error(
    source: str, repo_id: str, revision: str | None, filename: str, exc: Exception
) -> InputError:
    at = f" at revision '{revision}'" if revision else ""
    head = (
        f"'{source}' is not a local path, so it was taken as the Hugging Face repo '{repo_id}'"
        f"{at}; could not get {filename}"
    )
    if hf_constants.is_offline_mode():
        return InputError(
            f"{head}: offline mode (HF_HUB_OFFLINE=1) uses only the cache "
            f"{hf_constants.HF_HUB_CACHE}, which lacks it; download the model there while "
            "online (e.g. `hf download " + repo_id + "`) or pass a local path"
        )
    return InputError(
        f"{head} ({type(exc).__name__}: {_first_line(exc)}); check the repo id and the network, "
        f"or work from the cache {hf_constants.HF_HUB_CACHE} with HF_HUB_OFFLINE=1. Only "
        "safetensors repos are fetched: for other formats download the file and pass its path"
    )
