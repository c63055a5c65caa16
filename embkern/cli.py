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

from . import engine, report, sampled
from .backends import BACKENDS, get_backend, resolve_device
from .errors import EmbkernError, InputError
from .prepare import prepare
from .progress import TileProgress


def _ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated token ids, got {text!r}"
        ) from exc


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


def _analyse(m, args, anchor_ids=None):
    """Run the requested statistics on one loaded matrix; returns (prep, sampled, full)."""
    device = resolve_device(args.device)
    backend = get_backend(args.backend, device) if args.full else None
    prep = prepare(m.matrix, device)
    if anchor_ids is not None:
        s = sampled.sampled_stats(prep, sampled.anchors_from_ids(prep, anchor_ids), seed=None)
    else:
        s = sampled.sampled_stats(
            prep, sampled.draw_anchors(prep, args.anchors, args.seed), seed=args.seed
        )
    full = None
    if args.full:
        progress = TileProgress(not args.no_progress, m.name)
        try:
            full = engine.full_pass(
                prep,
                backend,
                exact_quantiles=args.exact_quantiles,
                block=args.block,
                progress=progress,
            )
        finally:
            progress.close()
    return prep, s, full


def cmd_stats(args) -> int:
    if args.per_token and not args.full:
        raise InputError("--per-token needs --full: per-token statistics come from the full pass")
    for flag, path in (("--json", args.json), ("--per-token", args.per_token)):
        if path:
            report.check_output_path(path, flag)
    t0 = time.perf_counter()
    m = _load(args.source, args)
    t1 = time.perf_counter()
    prep, s, full = _analyse(m, args, args.anchor_ids)
    t2 = time.perf_counter()
    desc = _describe(m)
    # Files first: a summary cut short by a closed pipe must not lose them.
    if args.json:
        source = {
            **desc,
            "excluded_rows": prep.excluded,
            "padding_rows": len(m.padding_rows),
            "seconds": {"load": t1 - t0, "compute": t2 - t1},
        }
        doc = report.stats_document(source, s, full, negative_ids=args.negative_ids)
        report.write_atomic(args.json, report.to_json(doc))
    if args.per_token:
        report.write_atomic(args.per_token, report.per_token_csv(full, m.tokens))
    shape = f"{desc['shape'][0]:,} x {desc['shape'][1]} {desc['dtype']}"
    print(f"{m.name}: {shape} ({m.tensor_name} in {m.path})")
    print(f"excluded rows: {report.excluded_summary(prep.excluded)}")
    if m.padding_rows:
        print(f"rows past the tokenizer's vocabulary ({m.vocab_size}): {len(m.padding_rows)}")
    print(report.sampled_summary(s, m.tokens))
    if full is not None:
        print(report.full_summary(full, m.tokens))
    print(f"loaded in {t1 - t0:.1f} s, computed in {t2 - t1:.1f} s")
    for path in (args.json, args.per_token):
        if path:
            print(f"wrote {path}")
    return 0


def cmd_compare(args) -> int:
    rows = []
    for source in args.sources:
        m = _load(source, args)
        _, s, full = _analyse(m, args)
        rows.append(report.seed_row(m.name, sampled=s))
        if full is not None:
            rows.append(report.seed_row(m.name, full=full))
        del m
    print(report.seed_table(rows, args.format), end="" if args.format == "csv" else "\n")
    return 0


def cmd_bench(args) -> int:
    from . import bench

    if args.block is not None and args.block < 1:
        raise InputError(f"--block must be a positive number of rows, got {args.block}")
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
