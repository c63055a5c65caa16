"""The CLI on small synthetic files: outputs, JSON keys, errors, interruption."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from embkern import engine
from embkern.cli import main


@pytest.fixture
def npy(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((101, 17)).astype(np.float32)
    X[3] = 0.0
    X[50, 2] = np.nan
    path = tmp_path / "emb.npy"
    np.save(path, X)
    return path


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_stats_full_writes_json_and_per_token(npy, tmp_path, capsys):
    js, pt = tmp_path / "r.json", tmp_path / "t.csv"
    code, out, _ = _run(
        capsys,
        "stats",
        npy,
        "--full",
        "--anchors",
        "5",
        "--no-progress",
        "--json",
        js,
        "--per-token",
        pt,
    )
    assert code == 0
    assert "Full vocabulary: 4,851 pairs" in out  # 99 valid rows
    doc = json.loads(js.read_text())
    assert doc["shape"] == [101, 17]
    assert doc["excluded_rows"] == {"non_finite": [50], "zero_norm": [3]}
    for key in ("anchors", "min", "max", "mean", "median", "nonneg", "neg", "frac_nonneg"):
        assert key in doc["sampled"]
    full = doc["full"]
    for key in (
        "pairs",
        "min",
        "max",
        "mean",
        "std",
        "neg",
        "nonneg",
        "frac_nonneg",
        "quantiles",
        "histogram",
    ):
        assert key in full
    assert set(full["quantiles"]) == {"0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99"}
    assert len(full["histogram"]["edges"]) == len(full["histogram"]["counts"]) + 1
    with open(pt) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "token_id",
        "token",
        "neg",
        "mean",
        "min",
        "max",
        "nearest_id",
        "nearest_cos",
    ]
    assert len(rows) == 101
    assert rows[3]["neg"] == "" and rows[50]["mean"] == ""
    assert sum(int(r["neg"]) for r in rows if r["neg"]) == 2 * full["neg"]


def test_exact_quantiles_and_naive_backend_agree(npy, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert (
        _run(capsys, "stats", npy, "--full", "--exact-quantiles", "--no-progress", "--json", a)[0]
        == 0
    )
    assert (
        _run(
            capsys,
            "stats",
            npy,
            "--full",
            "--exact-quantiles",
            "--backend",
            "naive",
            "--no-progress",
            "--json",
            b,
        )[0]
        == 0
    )
    qa = json.loads(a.read_text())["full"]
    qb = json.loads(b.read_text())["full"]
    assert qa["quantiles_exact"] and qa["quantile_error_bound"] == 0
    assert qa["quantiles"] == pytest.approx(qb["quantiles"], abs=1e-6)
    assert qa["neg"] == qb["neg"]


def test_anchor_ids_and_negative_ids(npy, tmp_path, capsys):
    js = tmp_path / "r.json"
    code, _, _ = _run(
        capsys, "stats", npy, "--anchor-ids", "0,7,100", "--negative-ids", "--json", js
    )
    assert code == 0
    sampled = json.loads(js.read_text())["sampled"]
    assert sampled["anchors"] == [0, 7, 100]
    for a in sampled["per_anchor"]:
        assert len(a["negative_ids"]) == a["neg"]
        assert 3 not in a["negative_ids"] and 50 not in a["negative_ids"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stats", "/no/such/file.npy"], "no such file"),
        (["stats", "NPY", "--per-token", "x.csv"], "--per-token needs --full"),
        (["stats", "NPY", "--full", "--backend", "triton"], "--backend torch"),
        (["stats", "NPY", "--anchor-ids", "3"], "excluded row"),
        (["stats", "NPY", "--anchors", "500"], "at most 99"),
        (["stats", "NPY", "--tensor", "foo"], "tensor"),
    ],
)
def test_user_errors_are_one_line(npy, capsys, args, message):
    args = [str(npy) if a == "NPY" else a for a in args]
    code, out, err = _run(capsys, *args)
    assert code == 2
    assert err.startswith("embkern: error:") and message in err
    assert "Traceback" not in err


def test_interrupt_writes_nothing(npy, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "full_pass", interrupted)
    js = tmp_path / "r.json"
    code, _, err = _run(capsys, "stats", npy, "--full", "--json", js)
    assert code == 130
    assert "interrupted" in err
    assert not js.exists() and not list(tmp_path.glob(".r.json*"))


def test_progress_bar_reports_tiles_on_stderr(npy, capsys):
    code, _, err = _run(capsys, "stats", npy, "--full", "--block", "16")
    assert code == 0
    assert "pass 1" in err and "28/28" in err  # ceil(99 / 16) = 7 blocks: 7 * 8 / 2 tiles


def test_models_lists_the_packaged_short_names(capsys):
    code, out, _ = _run(capsys, "models")
    assert code == 0
    for name in ("smollm2", "minilm", "gemma3-270m"):
        assert name in out


def test_bench_reports_three_phases(tmp_path, capsys):
    js = tmp_path / "b.json"
    code, out, _ = _run(
        capsys, "bench", "random:300x17:1", "--block", "64", "--no-progress", "--json", js
    )
    assert code == 0
    for phase in ("matmul", "full", "naive"):
        assert phase in out
    doc = json.loads(js.read_text())
    assert doc["shape"] == [300, 17] and doc["block"] == 64
    assert doc["full"]["vs_matmul"] == pytest.approx(
        doc["full"]["seconds"] / doc["matmul"]["seconds"]
    )
    assert doc["naive"]["full_speedup"] > 0
    assert doc["full"]["peak_rss_mb"] >= doc["matmul"]["peak_rss_mb"]


def test_bench_skips_a_naive_path_that_does_not_fit(capsys, monkeypatch):
    from embkern.backends import naive

    monkeypatch.setattr(naive, "available_bytes", lambda device: 1000)
    code, out, _ = _run(capsys, "bench", "random:300x17", "--no-progress")
    assert code == 0
    assert "skipped" in out and "materializes the 300x300 cosine matrix" in out


@pytest.mark.parametrize("block", ["0", "-5"])
def test_bad_block_is_a_clear_error(npy, capsys, block):
    code, _, err = _run(capsys, "stats", npy, "--full", "--block", block)
    assert code == 2 and "block must be a positive number of rows" in err


def test_outputs_are_checked_before_the_work(npy, tmp_path, capsys):
    code, _, err = _run(capsys, "stats", npy, "--full", "--json", tmp_path)
    assert code == 2 and "is a directory" in err
    code, _, err = _run(capsys, "stats", npy, "--json", tmp_path / "missing" / "r.json")
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "missing").exists()


def test_output_files_get_the_usual_permissions(npy, tmp_path, capsys):
    js = tmp_path / "r.json"
    assert _run(capsys, "stats", npy, "--json", js)[0] == 0
    assert js.stat().st_mode & 0o044 == 0o044  # readable by group and others under umask 022


def test_argparse_errors_are_one_line(npy, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["stats", str(npy), "--anchor-ids", "a,b"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.startswith("embkern: error:") and len(err.strip().splitlines()) == 1
