"""embkern: exact cosine-similarity statistics of embedding matrices.

Public API: :func:`load`, :func:`sampled_stats`, :func:`pair_stats`, :func:`cross_stats`,
:func:`analyze` (variants side by side, token findings, isotropy), :func:`isotropy`, and their
result types.
"""

from .analysis import Analysis, analyze
from .api import cross_stats, pair_stats, sampled_stats
from .cross import CrossResult
from .errors import BackendError, EmbkernError, InputError
from .isotropy import IsotropyResult, isotropy
from .results import AnchorStats, FullResult, PerTokenResult, SampledResult
from .stats import PairStats

__version__ = "0.1.0"


def load(source, **kwargs):
    """Load an embedding matrix; see :func:`embkern.loading.load`."""
    from .loading import load as _load

    return _load(source, **kwargs)


__all__ = [
    "Analysis",
    "AnchorStats",
    "BackendError",
    "CrossResult",
    "EmbkernError",
    "FullResult",
    "InputError",
    "IsotropyResult",
    "analyze",
    "cross_stats",
    "isotropy",
    "PairStats",
    "PerTokenResult",
    "SampledResult",
    "load",
    "pair_stats",
    "sampled_stats",
]
