"""The figure renders, is not blank, and refuses bad requests before drawing."""

from __future__ import annotations

import builtins
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from embkern import plots
from embkern.errors import InputError

pytest.importorskip("matplotlib")
import matplotlib.image  # noqa: E402

EDGES = np.linspace(-1.0, 1.0, 201)


def histogram(mean: float, std: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.histogram(rng.normal(mean, std, 50_000), EDGES)[0]


def per_token(V: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    neg = rng.poisson(40, V).astype(np.int64)
    neg[:93] = 3000  # an ASCII band at the left edge
    neg[200:210] = 0
    valid = np.ones(V, bool)
    valid[[5, 4000]] = False
    neg[~valid] = -1
    return neg, valid


CLASSES = [("ASCII punctuation", -0.04, 32), ("digits", 0.08, 10), ("letters", 0.15, 4000)]


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """The trapezoidal rule (np.trapezoid is numpy >= 2 only)."""
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)


def load_png(path) -> np.ndarray:
    img = matplotlib.image.imread(str(path))
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    return img[:, :, :3]


def assert_not_blank(img: np.ndarray) -> None:
    assert img.std() > 0.01
    colors = np.unique(img.reshape(-1, 3).round(3), axis=0)
    assert len(colors) > 10
    # Inside the figure, away from the margins, many pixels differ from the background.
    h, w, _ = img.shape
    inner = img[h // 10 : -h // 10, w // 10 : -w // 10]
    background = img[0, 0]
    assert np.mean(np.abs(inner - background).sum(-1) > 0.1) > 0.01


def test_png_with_all_panels(tmp_path):
    neg, valid = per_token()
    out = tmp_path / "all.png"
    plots.render(
        out,
        title="SmolLM2-135M",
        histograms=[
            ("raw", EDGES, histogram(0.1, 0.1, 0)),
            ("centered", EDGES, histogram(0, 0.1, 1)),
        ],
        random_dim=64,
        per_token_neg=neg,
        valid=valid,
        class_means=CLASSES,
    )
    img = load_png(out)
    h, w = img.shape[:2]
    assert w > 800 and h > 900  # three stacked panels
    assert_not_blank(img)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file is gone


@pytest.mark.parametrize(
    "kwargs",
    [
        {"histograms": [("raw", EDGES, histogram(0.1, 0.1, 0))]},
        {"histograms": [], "random_dim": 3},
        {"histograms": [], "per_token_neg": per_token()[0]},
        {"histograms": [], "class_means": CLASSES},
        {"histograms": [("raw", EDGES, histogram(0.1, 0.1, 0))], "class_means": CLASSES},
    ],
)
def test_png_with_some_panels(tmp_path, kwargs):
    out = tmp_path / "some.png"
    plots.render(out, title="MiniLM", **kwargs)
    img = load_png(out)
    assert img.shape[0] > 200 and img.shape[1] > 800
    assert_not_blank(img)


def test_fewer_panels_make_a_shorter_figure(tmp_path):
    neg, valid = per_token()
    hist = [("raw", EDGES, histogram(0.1, 0.1, 0))]
    plots.render(tmp_path / "one.png", title="m", histograms=hist)
    plots.render(tmp_path / "two.png", title="m", histograms=hist, per_token_neg=neg, valid=valid)
    assert load_png(tmp_path / "one.png").shape[0] < load_png(tmp_path / "two.png").shape[0]


def test_svg_parses_and_contains_the_title(tmp_path):
    out = tmp_path / "fig.SVG"
    neg, valid = per_token()
    plots.render(
        out,
        title="gemma-3-270m embeddings",
        histograms=[("raw", EDGES, histogram(0.0, 0.2, 2))],
        random_dim=2,
        per_token_neg=neg,
        valid=valid,
        class_means=CLASSES,
    )
    text = out.read_text()
    root = ET.fromstring(text)
    assert root.tag.endswith("svg")
    assert "gemma-3-270m embeddings" in text


def test_degenerate_inputs_still_render(tmp_path):
    """Empty counts, d = 1, all-zero negative counts, a class without tokens."""
    out = tmp_path / "edge.png"
    plots.render(
        out,
        title="edge cases",
        histograms=[("empty", EDGES, np.zeros(200, np.int64))],
        random_dim=1,
        per_token_neg=np.zeros(50, np.int64),
        class_means=[("CJK", math.nan, 0)],
    )
    assert load_png(out).shape[0] > 300


def test_bad_suffix_raises_before_writing(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "_import_matplotlib", lambda: drawn.append(1))
    for name in ("fig.pdf", "fig", "fig.png.txt"):
        with pytest.raises(InputError, match=r"\.png or \.svg"):
            plots.render(tmp_path / name, title="t", histograms=[("raw", EDGES, np.ones(200))])
    assert not drawn
    assert not list(tmp_path.iterdir())


def test_bad_inputs_raise_before_writing(tmp_path):
    out = tmp_path / "x.png"
    with pytest.raises(InputError, match="one more entry"):
        plots.render(out, title="t", histograms=[("raw", EDGES, np.ones(10))])
    with pytest.raises(InputError, match="nothing to plot"):
        plots.render(out, title="t", histograms=[])
    with pytest.raises(InputError, match="valid has shape"):
        plots.render(
            out, title="t", histograms=[], per_token_neg=np.ones(5), valid=np.ones(4, bool)
        )
    with pytest.raises(InputError, match="does not exist"):
        plots.render(tmp_path / "no" / "x.png", title="t", histograms=[("r", EDGES, np.ones(200))])
    with pytest.raises(InputError, match="random_dim"):
        plots.render(out, title="t", histograms=[], random_dim=0)
    assert not list(tmp_path.iterdir())


def test_missing_matplotlib_gives_the_install_hint(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(InputError, match=r"pip install matplotlib \(or embkern\[plot\]\)"):
        plots.render(tmp_path / "x.png", title="t", histograms=[("raw", EDGES, np.ones(200))])
    assert not list(tmp_path.iterdir())


def test_density_integrates_to_one():
    for d in (2, 3, 4, 5, 64, 768, 4096):
        # Substitute t = sin(θ) to integrate the d = 2 endpoint singularity exactly.
        # Midpoint rule: no node sits on the endpoints.
        n = 200_000
        theta = -np.pi / 2 + (np.arange(n) + 0.5) * (np.pi / n)
        f = plots.gaussian_cosine_density(np.sin(theta), d) * np.cos(theta)
        assert f.sum() * (np.pi / n) == pytest.approx(1.0, abs=1e-6), d


def test_density_known_values():
    t = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    assert plots.gaussian_cosine_density(t, 3) == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.5, 0.0])
    f2 = plots.gaussian_cosine_density(np.array([0.0, 0.6]), 2)
    assert f2 == pytest.approx([1 / np.pi, 1 / (np.pi * 0.8)])
    assert plots.gaussian_cosine_density(1.0, 2) == np.inf
    assert plots.gaussian_cosine_density(np.array([-1.0, 1.0]), 10) == pytest.approx([0, 0])
    # Large d stays finite and is close to N(0, 1/d) at the centre.
    assert plots.gaussian_cosine_density(0.0, 100_000) == pytest.approx(
        math.sqrt(100_000 / (2 * math.pi)), rel=1e-4
    )
    with pytest.raises(InputError, match="d >= 2"):
        plots.gaussian_cosine_density(0.0, 1)


@pytest.mark.parametrize("d", [5, 64])
def test_density_matches_monte_carlo(d):
    rng = np.random.default_rng(d)
    g, h = rng.normal(size=(2, 400_000, d))
    cos = (g * h).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(h, axis=1))
    edges = np.linspace(-1.0, 1.0, 41)
    counts = np.histogram(cos, edges)[0]
    # Expected count per bin from the density, integrated on a fine grid within each bin.
    expected = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        t = np.linspace(lo, hi, 201)
        expected.append(trapezoid(plots.gaussian_cosine_density(t, d), t) * cos.size)
    expected = np.array(expected)
    big = expected > 100
    z = (counts[big] - expected[big]) / np.sqrt(expected[big])
    assert np.abs(z).max() < 5
    assert counts[~big].sum() == pytest.approx(expected[~big].sum(), abs=6 * math.sqrt(300) + 10)
