"""embkern: exact cosine-similarity statistics of embedding matrices.

Public API: :func:`load`, :func:`sampled_stats`, :func:`pair_stats`, and their result types.
"""

from .api import pair_stats, sampled_stats
from .errors import BackendError, EmbkernError, InputError
from .results import AnchorStats, FullResult, PerTokenResult, SampledResult
from .stats import PairStats

__version__ = "0.1.0"


def load(source, **kwargs):
    """Load an embedding matrix; see :func:`embkern.loading.load`."""
    from .loading import load as _load

    return _load(source, **kwargs)


__all__ = [
    "AnchorStats",
    "BackendError",
    "EmbkernError",
    "FullResult",
    "InputError",
    "PairStats",
    "PerTokenResult",
    "SampledResult",
    "load",
    "pair_stats",
    "sampled_stats",
]
