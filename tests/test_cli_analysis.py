"""The analysis flags of the CLI and API on small synthetic files: variants side by side,
exclusions, cross statistics against a second tensor, isotropy, plots, and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import embkern
from embkern import report
from embkern.cli import main
from embkern.transform import center_and_project, random_baseline


@pytest.fixture
def offset_npy(tmp_path):
    """Rows with a shared offset (mostly positive cosines), one zero row, one NaN row."""
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((120, 16)) * 0.5 + 0.6).astype(np.float32)
    X[3] = 0.0
    X[50, 2] = np.nan
    path = tmp_path / "emb.npy"
    np.save(path, X)
    return path, X


@pytest.fixture
def two_tensors(tmp_path):
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(90, 12, generator=g) + 0.3
    head = emb + 0.5 * torch.randn(90, 12, generator=g)
    head[5] = -emb[5]
    path = tmp_path / "model.safetensors"
    save_file({"model.embed_tokens.weight": emb, "lm_head.weight": head}, str(path))
    return path, emb, head


def _run(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_side_by_side_json_matches_the_api(offset_npy, tmp_path, capsys):
    path, X = offset_npy
    js = tmp_path / "r.json"
    code, out, err = _run(
        capsys, "stats", path, "--full", "--center", "--remove-pcs", "2",
        "--baseline", "random", "--anchors", "10", "--json", js, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "Side by side:" in out
    for name in ("raw", "centered", "centered, top-2 PCs removed", "random N(0, 1)"):
        assert f"| {name}" in out
    assert "Sampled protocol against the exact average" in out
    doc = json.loads(js.read_text())
    variants = doc["analysis"]["variants"]
    assert [v["name"] for v in variants] == [
        "raw",
        "centered",
        "centered, top-2 PCs removed",
        "random N(0, 1)",
    ]
    # Each variant's full pass equals the API on the same matrix, computed independently.
    keep = np.isfinite(X).all(1) & (np.abs(X).sum(1) > 0)
    T, _ = center_and_project(torch.from_numpy(X), keep, 0)
    centered = embkern.pair_stats(T[torch.from_numpy(keep)], per_token=False)
    assert variants[1]["full"]["mean"] == pytest.approx(centered.mean, abs=1e-12)
    assert variants[1]["full"]["neg"] == centered.neg
    R = random_baseline(int(keep.sum()), X.shape[1], 0)
    rand = embkern.pair_stats(R, per_token=False)
    assert variants[3]["full"]["neg"] == rand.neg
    assert variants[0]["full"]["frac_nonneg"] > variants[1]["full"]["frac_nonneg"]
    assert variants[2]["transform"]["remove_pcs"] == 2
    assert 0 < variants[2]["transform"]["pc_share"] < 1
    # The centered variants reuse the raw anchors.
    assert variants[1]["sampled"]["anchors"] == variants[0]["sampled"]["anchors"]
    errors = {row["column"]: row for row in doc["analysis"]["sampled_vs_exact"]}
    assert errors["mean"]["exact"] == pytest.approx(variants[0]["full"]["mean"], abs=1e-7)


def test_exclude_categories(two_tensors, tmp_path, capsys, monkeypatch):
    path, _, _ = two_tensors
    js = tmp_path / "r.json"
    code, out, err = _run(
        capsys, "stats", path, "--exclude", "untrained,padding", "--json", js, "--no-progress"
    )
    assert code == 0, err
    doc = json.loads(js.read_text())
    assert "untrained" in doc["excluded_rows"] and "padding" in doc["excluded_rows"]
    assert "flagged rows:" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--exclude", "specials"], "expected a comma-separated list among"),
        (["--remove-pcs", "-1"], "--remove-pcs must be 0 or more"),
        (["--remove-pcs", "16", "--full"], "remove between 0 and 15"),
        (["--plot", "x.png"], "--plot needs --full"),
        (["--full", "--plot", "x.pdf"], ".pdf"),
        (["--against", "no_such_tensor"], "--against no_such_tensor"),
    ],
)
def test_analysis_flag_errors(offset_npy, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path, _ = offset_npy
    code, out, err = _run(capsys, "stats", path, "--no-progress", *args)
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_against_a_tensor_of_the_same_file(two_tensors, tmp_path, capsys):
    path, emb, head = two_tensors
    js = tmp_path / "r.json"
    code, out, err = _run(
        capsys, "stats", path, "--against", "lm_head.weight", "--json", js, "--no-progress"
    )
    assert code == 0, err
    assert "Cross statistics against" in out and "lowest self-similarity: 5 " in out
    cross = json.loads(js.read_text())["analysis"]["cross"]
    E = torch.nn.functional.normalize(emb.double(), dim=1)
    H = torch.nn.functional.normalize(head.double(), dim=1)
    S = E @ H.T
    assert cross["pairs"]["pairs"] == 90 * 90
    assert cross["pairs"]["mean"] == pytest.approx(float(S.mean()), abs=1e-6)
    assert cross["pairs"]["neg"] == int((S < 0).sum())
    ss = cross["self_similarity"]
    assert ss["mean"] == pytest.approx(float(S.diagonal().mean()), abs=1e-12)
    assert ss["lowest"][0][0] == 5 and ss["lowest"][0][1] == pytest.approx(-1.0, abs=1e-12)


def test_against_another_file(two_tensors, offset_npy, tmp_path, capsys):
    path, emb, _ = two_tensors
    other = tmp_path / "other.npy"
    np.save(other, emb[:70].numpy())
    code, out, err = _run(capsys, "stats", path, "--against", other, "--no-progress")
    assert code == 0, err
    assert "4,900 pairs" not in out and f"{90 * 70:,} pairs" in out
    # Widths differ: a clear error.
    npy, _ = offset_npy
    code, _, err = _run(capsys, "stats", path, "--against", npy, "--no-progress")
    assert code == 2 and "different widths" in err


def test_isotropy_and_plot(offset_npy, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    path, X = offset_npy
    png = tmp_path / "p.png"
    code, out, err = _run(
        capsys, "stats", path, "--full", "--isotropy", "--baseline", "random",
        "--plot", png, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "Isotropy: average cosine" in out
    img = matplotlib.image.imread(png)
    assert img.shape[0] > 300 and img.shape[1] > 300
    assert img[..., :3].std() > 0.01
    iso = embkern.isotropy(X)
    assert f"average cosine {iso.average_cosine:.4f}" in out


def test_compare_adds_variant_rows(offset_npy, capsys):
    path, _ = offset_npy
    code, out, err = _run(
        capsys, "compare", path, path, "--center", "--baseline", "random", "--no-progress"
    )
    assert code == 0, err
    assert out.count("(centered)") == 2 and out.count("(random N(0, 1))") == 2


def test_analyze_api_on_a_tensor():
    X = torch.randn(200, 8, generator=torch.Generator().manual_seed(0)) + 0.4
    a = embkern.analyze(X, full=True, center=True, anchors=20, isotropy=True)
    assert [v.name for v in a.variants] == ["raw", "centered"]
    assert a.classes is None  # no tokens on a bare tensor
    assert a.ranges is not None and a.isotropy.n_rows == 200
    doc = a.to_dict()
    assert doc["variants"][0]["full"]["pairs"] == 200 * 199 // 2
    json.dumps(doc, allow_nan=False)


class _Loaded:
    """The attributes of a LoadedMatrix that analyze() reads."""

    def __init__(self, matrix, tokens):
        self.matrix, self.tokens, self.name = matrix, tokens, "planted"
        self.special_ids, self.padding_rows = [0], []


def test_planted_ascii_band_is_named_with_its_enrichment():
    """Rows 1-20 are single ASCII characters pointing against the shared direction."""
    g = torch.Generator().manual_seed(5)
    V, d = 300, 24
    X = torch.randn(V, d, generator=g) * 0.3 + 1.0
    X[1:21] = -1.0 + 0.3 * torch.randn(20, d, generator=g)
    tokens = ["<s>"] + list("!#$%&()*+,-./0123:;<") + [f"␣word{i}" for i in range(V - 21)]
    tokens[299] = "[unused0]"
    a = embkern.analyze(_Loaded(X, tokens), full=True, anchors=5)
    assert a.flagged["special"] == [0, 299]  # special ids and reserved slots
    band = a.ascii_band
    U = torch.nn.functional.normalize(X.double(), dim=1)
    S = U @ U.T
    S.fill_diagonal_(0.0)
    neg = (S < 0).sum(1).numpy()
    assert band.tokens == 20
    assert band.vocab_share == pytest.approx(20 / V)
    assert band.neg_share == pytest.approx(neg[1:21].sum() / neg.sum())
    assert band.enrichment == pytest.approx(band.neg_share / (20 / V))
    assert band.enrichment > 5
    classes = {c.name: c for c in a.classes}
    assert classes["ASCII punctuation"].tokens + classes["ASCII digit"].tokens == 20
    assert a.ranges[0].start == 1 and a.ranges[0].end == 20
    summary = report.analysis_summary(a, tokens)
    assert "The seed note's band, single ASCII characters: 20 tokens" in summary


def test_block_larger_than_the_matrix(offset_npy, capsys):
    path, _ = offset_npy
    code, out, err = _run(capsys, "stats", path, "--full", "--block", "100000", "--no-progress")
    assert code == 0, err
    assert "Full vocabulary" in out


def test_bench_repeat_must_be_positive(offset_npy, capsys):
    path, _ = offset_npy
    code, _, err = _run(capsys, "bench", path, "--repeat", "0", "--no-progress")
    assert code == 2 and "--repeat must be 1 or more" in err


def test_plot_without_matplotlib_fails_before_any_work(offset_npy, tmp_path, capsys, monkeypatch):
    from embkern import errors, plots

    def missing():
        raise errors.InputError("plots need matplotlib: pip install matplotlib")

    monkeypatch.setattr(plots, "_import_matplotlib", missing)
    monkeypatch.setattr("embkern.cli._load", lambda *a: pytest.fail("loaded before the check"))
    path, _ = offset_npy
    js = tmp_path / "r.json"
    code, _, err = _run(capsys, "stats", path, "--full", "--plot", tmp_path / "p.png", "--json", js)
    assert code == 2 and "pip install matplotlib" in err
    assert not js.exists()


def test_remove_pcs_beyond_the_rank_of_the_rows(tmp_path, capsys):
    X = np.random.default_rng(0).standard_normal((6, 32)).astype(np.float32)
    path = tmp_path / "wide.npy"
    np.save(path, X)
    # 6 centered rows span 5 directions.
    code, _, err = _run(capsys, "stats", path, "--anchors", "3", "--remove-pcs", "5")
    assert code == 2 and "span only 5 directions" in err
    code, out, err = _run(capsys, "stats", path, "--anchors", "3", "--remove-pcs", "4")
    assert code == 0, err


def test_centering_that_zeroes_rows(tmp_path, capsys):
    X = np.ones((10, 4), np.float32)
    path = tmp_path / "same.npy"
    np.save(path, X)
    code, _, err = _run(capsys, "stats", path, "--anchors", "3", "--center")
    assert code == 2 and "centered rows" in err and "made the rows zero" in err
    # A row equal to the mean of the measured rows becomes zero: listed, and left out of the
    # centered variant only. Mean of the four rows: (1, 1), which is row 3.
    Y = np.array([[1, 0], [0, 1], [2, 2], [1, 1]], np.float32)
    a = embkern.analyze(Y, center=True, anchors=2, full=True)
    raw, centered = a.variants
    assert centered.transform.zero_rows == [3]
    assert raw.full.pairs == 6 and centered.full.pairs == 3
    assert "1 rows became zero and are left out (3)" in report.analysis_summary(a, None)


def test_against_lists_the_other_matrix_excluded_rows(two_tensors, tmp_path, capsys):
    path, emb, head = two_tensors
    head = head.clone()
    head[2] = 0.0
    head[4, 1] = float("nan")
    save_file({"model.embed_tokens.weight": emb, "lm_head.weight": head}, str(path))
    js = tmp_path / "r.json"
    code, out, err = _run(
        capsys, "stats", path, "--against", "lm_head.weight", "--json", js, "--no-progress"
    )
    assert code == 0, err
    cross = json.loads(js.read_text())["analysis"]["cross"]
    assert cross["excluded_rows_b"]["zero_norm"] == [2]
    assert cross["excluded_rows_b"]["non_finite"] == [4]
    assert cross["pairs"]["pairs"] == 90 * 88
    assert "excluded rows of the other matrix: 1 non-finite (4); 1 zero-norm (2)" in out
