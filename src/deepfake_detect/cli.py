"""The ``deepfake-detect`` command."""
from __future__ import annotations

import argparse
import sys


def _cmd_prepare(args) -> None:
    from .config import load_params
    from .splits import prepare_all

    prepare_all(load_params(args.params))


def _cmd_train(args) -> None:
    from .config import stage_params
    from .train import fit

    params, cfg = stage_params(args.stage, args.params)
    fit(cfg, params)


def _cmd_report(args) -> None:
    from .report import report

    print(report(args.readme, check=args.check, write=args.write))


def _cmd_demo(args) -> None:
    from .demo import generate_dataset

    generate_dataset(args.out, kind=args.kind, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                     image_size=args.image_size, seed=args.seed)
    print(f"wrote {args.kind} demo data to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="deepfake-detect", description="Train, evaluate and explain deepfake detectors.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare-splits", help="write split manifests for the datasets in params.yaml")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_cmd_prepare)

    from .config import TRAIN_STAGES

    p = sub.add_parser("train", help="run one training stage of params.yaml")
    p.add_argument("stage", choices=TRAIN_STAGES)
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("demo", help="write a procedural demo dataset in the course layout")
    p.add_argument("out")
    p.add_argument("--kind", choices=("fakes", "synthetic"), default="fakes")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-val", type=int, default=90)
    p.add_argument("--n-test", type=int, default=90)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("report", help="the README's results tables, generated from the metrics files")
    p.add_argument("--readme", default="README.md")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail when README.md's tables differ")
    mode.add_argument("--write", action="store_true", help="rewrite README.md's tables")
    p.set_defaults(func=_cmd_report)

    import importlib

    for name in _SUBCOMMAND_MODULES:  # each such module has add_cli(subparsers)
        importlib.import_module(f"deepfake_detect.{name}").add_cli(sub)
    return ap


# package modules that add their own sub-commands (evaluate, predict, explain ...)
_SUBCOMMAND_MODULES = ("evaluate", "explain", "plots.page")


def main(argv: list[str] | None = None) -> int:
    from .errors import run_main

    def _run(argv):
        args = build_parser().parse_args(argv)
        args.func(args)

    return run_main(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
