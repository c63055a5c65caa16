"""The ``embkern`` command line: ``stats``, ``compare`` and ``models``.

Errors the user can fix print one line ("embkern: error: …") and exit with status 2; Ctrl-C
stops at the next tile, writes nothing and exits with status 130.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from . import report
from .backends import BACKENDS, get_backend, resolve_device
from .errors import EmbkernError, InputError
from .progress import TileProgress


def _ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated token ids, got {text!r}"
        ) from exc


def _categories(text: str) -> tuple[str, ...]:
    from .analysis import EXCLUDABLE

    parts = tuple(t for t in text.replace(" ", "").split(",") if t)
    bad = [t for t in parts if t not in EXCLUDABLE]
    if bad or not parts:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list among {','.join(EXCLUDABLE)}, got {text!r}"
        )
    return parts


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--anchors",
        type=int,
        default=50,
        metavar="K",
        help="anchors of the sampled protocol (default 50)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the anchor draw (default 0)")
    p.add_argument(
        "--full",
        action="store_true",
        help="also reduce every pair i < j of the vocabulary (streamed, exact)",
    )
    p.add_argument(
        "--exact-quantiles",
        action="store_true",
        help="exact order statistics via a second pass (default: histogram, ±5.1e-5)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default), cpu-fused (numba epilogue), torch (tiled), naive (VxV), triton",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda", "mps"],
        default=None,
        help="default: cuda, else mps, else cpu",
    )
    p.add_argument(
        "--block",
        type=int,
        default=None,
        metavar="ROWS",
        help="tile side in rows (default: chosen per device)",
    )
    p.add_argument(
        "--precision",
        choices=["ieee", "tf32", "tf32x3"],
        default="ieee",
        help="input precision of fp32 dot products in the triton backend (default ieee; see"
        " README for the measured sign errors)",
    )
    p.add_argument(
        "--tensor",
        default=None,
        metavar="NAME",
        help="the tensor to read instead of the auto-detected input embedding",
    )
    p.add_argument(
        "--lm-head",
        action="store_true",
        help="use the output embedding (lm_head) where it is not tied",
    )
    p.add_argument("--revision", default=None, help="Hugging Face revision (or use org/name@rev)")
    p.add_argument(
        "--baseline",
        choices=["random"],
        default=None,
        help="also measure a seeded N(0, 1) matrix of the same shape, side by side",
    )
    p.add_argument(
        "--center",
        action="store_true",
        help="also measure the rows minus their mean embedding, side by side",
    )
    p.add_argument(
        "--remove-pcs",
        type=int,
        default=0,
        metavar="K",
        help="also measure the centered rows with their top-K principal directions removed",
    )
    p.add_argument(
        "--exclude",
        type=_categories,
        default=(),
        metavar="special,padding,untrained",
        help="leave these rows out of every statistic (see README for the untrained rule)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is loaded and chosen")


class _Parser(argparse.ArgumentParser):
    """argparse with embkern's one-line error format."""

    def error(self, message: str):
        self.exit(2, f"embkern: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="embkern",
        description="Cosine-similarity statistics of an embedding matrix, sampled or over every"
        " pair of the vocabulary. SOURCE is a packaged model short name (see 'embkern models'),"
        " a .safetensors/.gguf/.npy/.pt file, a model folder, or a Hugging Face repo id.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    st = sub.add_parser("stats", help="statistics of one matrix")
    st.add_argument("source")
    _common(st)
    st.add_argument(
        "--anchor-ids",
        type=_ids,
        default=None,
        metavar="1,2,3",
        help="explicit anchor token ids instead of a random draw",
    )
    st.add_argument("--json", default=None, metavar="PATH", help="write all results as JSON")
    st.add_argument(
        "--per-token",
        default=None,
        metavar="PATH",
        help="write per-token statistics as CSV (needs --full)",
    )
    st.add_argument(
        "--negative-ids",
        action="store_true",
        help="include each anchor's negative partner ids in the JSON",
    )
    st.add_argument(
        "--isotropy",
        action="store_true",
        help="isotropy measures: average cosine, I(W), IsoScore, effective rank",
    )
    st.add_argument(
        "--against",
        default=None,
        metavar="SOURCE_OR_TENSOR",
        help="cross statistics against a second matrix of the same width: a tensor name of"
        " the same file (e.g. lm_head.weight) or another source",
    )
    st.add_argument(
        "--plot",
        default=None,
        metavar="PATH.png|svg",
        help="draw the cosine histogram (with the random baseline), the per-token negative"
        " counts and the mean cosine by token class (needs matplotlib)",
    )

    cmp_ = sub.add_parser("compare", help="the seed note's table for several models")
    cmp_.add_argument("sources", nargs="+", metavar="SOURCE")
    _common(cmp_)
    cmp_.add_argument("--format", choices=["markdown", "csv"], default="markdown")

    bench = sub.add_parser(
        "bench",
        help="time the full pass against the half-problem matmul and the naive path",
        description="SOURCE may also be random:VxD[:seed] for a seeded N(0, 1) matrix.",
    )
    bench.add_argument("source")
    bench.add_argument("--backend", choices=BACKENDS, default="auto")
    bench.add_argument("--device", choices=["cpu", "cuda", "mps"], default=None)
    bench.add_argument("--block", type=int, default=None, metavar="ROWS")
    bench.add_argument("--no-naive", action="store_true", help="skip the naive path")
    bench.add_argument("--repeat", type=int, default=1, help="best of N runs (default 1)")
    bench.add_argument("--json", default=None, metavar="PATH")
    bench.add_argument("--tensor", default=None, metavar="NAME")
    bench.add_argument("--lm-head", action="store_true")
    bench.add_argument("--revision", default=None)
    bench.add_argument("--no-progress", action="store_true")

    sub.add_parser("models", help="list the packaged model short names")
    return parser


def _load(source: str, args):
    from .loading import load

    return load(source, tensor=args.tensor, lm_head=args.lm_head, revision=args.revision)


def _describe(m) -> dict:
    return {
        "source": m.source,
        "name": m.name,
        "path": str(m.path),
        "tensor": m.tensor_name,
        "shape": list(m.matrix.shape),
        "dtype": str(m.matrix.dtype).replace("torch.", ""),
    }


_FILE_SUFFIXES = (".safetensors", ".gguf", ".npy", ".pt", ".pth", ".bin", ".json")


def _against(args):
    """--against: a tensor of the same file when the source has one by that name, else a source."""
    from .loading import load
    from .models import PACKAGED_MODELS

    name = args.against
    looks_like_path = os.sep in name or os.path.splitext(name)[1] in _FILE_SUFFIXES
    if os.path.exists(name) or name in PACKAGED_MODELS or looks_like_path:
        try:
            return load(name, revision=args.revision)
        except InputError as exc:
            raise InputError(f"--against {name}: {exc}") from None
    try:
        return load(args.source, tensor=name, revision=args.revision)
    except InputError as exc:
        as_tensor = str(exc)
    try:
        return load(name, revision=args.revision)
    except InputError:
        raise InputError(
            f"--against {name} is neither a tensor of {args.source} ({as_tensor}) nor a file,"
            " a packaged model or a cached Hugging Face repo"
        ) from None


def _progress_factory(args, name: str, bars: list):
    def factory(label: str):
        bar = TileProgress(not args.no_progress, f"{name} {label}")
        bars.append(bar)
        return bar

    return factory


def _analyse(m, args, anchor_ids=None, against=None):
    """Run everything the flags ask for on one loaded matrix; returns an Analysis."""
    from .analysis import analyze

    bars: list[TileProgress] = []
    try:
        return analyze(
            m,
            anchors=args.anchors,
            seed=args.seed,
            anchor_ids=anchor_ids,
            full=args.full,
            exact_quantiles=args.exact_quantiles,
            backend=args.backend,
            device=args.device,
            block=args.block,
            baseline=args.baseline,
            center=args.center,
            remove_pcs=args.remove_pcs,
            exclude=args.exclude,
            against=against,
            isotropy=getattr(args, "isotropy", False),
            precision=args.precision,
            progress=_progress_factory(args, m.name, bars),
        )
    finally:
        for bar in bars:
            bar.close()


def _check_flags(args) -> None:
    if args.remove_pcs < 0:
        raise InputError(f"--remove-pcs must be 0 or more, got {args.remove_pcs}")
    if args.block is not None and args.block < 1:
        raise InputError(f"--block must be a positive number of rows, got {args.block}")
    # Fail on a bad device or backend before loading anything.
    get_backend(args.backend, resolve_device(args.device), args.precision)


def cmd_stats(args) -> int:
    for flag, value in (("--per-token", args.per_token), ("--plot", args.plot)):
        if value and not args.full:
            raise InputError(f"{flag} needs --full: it shows statistics of the full pass")
    _check_flags(args)
    for flag, path in (("--json", args.json), ("--per-token", args.per_token)):
        if path:
            report.check_output_path(path, flag)
    if args.plot:
        from .plots import FORMATS, require_matplotlib

        require_matplotlib()
        report.check_output_path(args.plot, "--plot")
        if os.path.splitext(args.plot)[1].lower() not in FORMATS:
            raise InputError(
                f"--plot {args.plot}: the file name must end in {' or '.join(FORMATS)}"
            )
    t0 = time.perf_counter()
    m = _load(args.source, args)
    other = _against(args) if args.against else None
    t1 = time.perf_counter()
    a = _analyse(m, args, args.anchor_ids, other)
    t2 = time.perf_counter()
    desc = _describe(m)
    raw = a.raw
    # Files first: a summary cut short by a closed pipe must not lose them.
    if args.json:
        source = {
            **desc,
            "excluded_rows": a.excluded_rows,
            "padding_rows": len(m.padding_rows),
            "seconds": {"load": t1 - t0, "compute": t2 - t1},
        }
        if other is not None:
            source["against"] = _describe(other)
        doc = report.stats_document(source, raw.sampled, raw.full, negative_ids=args.negative_ids)
        doc["analysis"] = a.to_dict(negative_ids=args.negative_ids)
        report.write_atomic(args.json, report.to_json(doc))
    if args.per_token:
        report.write_atomic(args.per_token, report.per_token_csv(raw.full, m.tokens))
    if args.plot:
        _plot(args.plot, m, a)
    shape = f"{desc['shape'][0]:,} x {desc['shape'][1]} {desc['dtype']}"
    print(f"{m.name}: {shape} ({m.tensor_name} in {m.path})")
    print(f"excluded rows: {report.excluded_summary(a.excluded_rows)}")
    print(f"flagged rows: {report.flagged_summary(a.flagged)}")
    if m.padding_rows:
        print(f"rows past the tokenizer's vocabulary ({m.vocab_size}): {len(m.padding_rows)}")
    print(report.sampled_summary(raw.sampled, m.tokens))
    if raw.full is not None:
        print(report.full_summary(raw.full, m.tokens))
    print(report.analysis_summary(a, m.tokens, other))
    print(f"loaded in {t1 - t0:.1f} s, computed in {t2 - t1:.1f} s")
    for path in (args.json, args.per_token, args.plot):
        if path:
            print(f"wrote {path}")
    return 0


def _plot(path: str, m, a) -> None:
    from .plots import render

    histograms = []
    for v in a.variants:
        if v.full is not None:
            histograms.append((v.name, v.full.histogram_edges, v.full.histogram_counts))
    pt = a.raw.full.per_token if a.raw.full is not None else None
    class_means = None
    if a.classes:
        class_means = [(c.name, c.mean_cos, c.tokens) for c in a.classes if c.tokens]
    render(
        path,
        title=f"{m.name}: cosine similarity of token embeddings ({a.raw.full.pairs:,} pairs)",
        histograms=histograms,
        random_dim=a.shape[1],
        per_token_neg=None if pt is None else pt.neg,
        valid=None if pt is None else pt.valid,
        class_means=class_means,
    )


def cmd_compare(args) -> int:
    _check_flags(args)
    rows = []
    for source in args.sources:
        m = _load(source, args)
        a = _analyse(m, args)
        for v in a.variants:
            label = m.name if v.name == "raw" else f"{m.name} ({v.name})"
            rows.append(report.seed_row(label, sampled=v.sampled))
            if v.full is not None:
                rows.append(report.seed_row(label, full=v.full))
        del m, a
    print(report.seed_table(rows, args.format), end="" if args.format == "csv" else "\n")
    return 0


def cmd_bench(args) -> int:
    from . import bench

    if args.block is not None and args.block < 1:
        raise InputError(f"--block must be a positive number of rows, got {args.block}")
    if args.repeat < 1:
        raise InputError(f"--repeat must be 1 or more, got {args.repeat}")
    X = bench.random_matrix(args.source)
    name = args.source
    if X is None:
        m = _load(args.source, args)
        X, name = m.matrix, m.name
    progress = TileProgress(not args.no_progress, name)
    try:
        result = bench.run(
            X,
            name=name,
            backend=args.backend,
            device=resolve_device(args.device),
            block=args.block,
            naive=not args.no_naive,
            repeat=args.repeat,
            progress=progress,
        )
    finally:
        progress.close()
    if args.json:
        report.write_atomic(args.json, report.to_json(result))
    print(bench.table(result))
    if args.json:
        print(f"wrote {args.json}")
    return 0


def cmd_models(args) -> int:
    from .models import PACKAGED_MODELS

    for name, what in PACKAGED_MODELS.items():
        print(f"{name:14s} {what}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Only embkern's own loggers print here; libraries keep their own handlers.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("embkern: %(message)s"))
    logger = logging.getLogger("embkern")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if getattr(args, "verbose", False) else logging.WARNING)
    commands = {
        "stats": cmd_stats,
        "compare": cmd_compare,
        "bench": cmd_bench,
        "models": cmd_models,
    }
    command = commands[args.command]
    try:
        return command(args)
    except EmbkernError as exc:
        print(f"embkern: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("embkern: interrupted; nothing was written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away; output files were written before printing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
