"""Command line: ``python -m fastxent {info,check,bench,tune,demo}``."""

import argparse
import sys


def _info(args):
    from . import show_config
    show_config()


def _check(args):
    from ._selfcheck import main
    return main()


def _bench(args):
    from ._bench import main
    return main(args)


def _tune(args):
    from ._tune import main
    return main(args)


def _demo(args):
    from .sklearn._demo import main
    return main(args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastxent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, backends, build and thread settings").set_defaults(
        func=_info)
    sub.add_parser("check", help="correctness self-check of every backend against a float64 "
                                 "oracle").set_defaults(func=_check)
    bench = sub.add_parser("bench", help="compare backends and the NumPy baseline")
    try:
        from ._bench import add_arguments
        add_arguments(bench)
    except ImportError:
        pass
    bench.set_defaults(func=_bench)
    tune = sub.add_parser("tune", help="measure this machine and write an auto-policy table")
    try:
        from ._tune import add_arguments as tune_args
        tune_args(tune)
    except ImportError:
        pass
    tune.set_defaults(func=_tune)
    demo = sub.add_parser("demo", help="train SoftmaxRegression on digits next to scikit-learn")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
