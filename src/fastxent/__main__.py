"""Command line: ``python -m fastxent {info,check,bench,tune,demo}``."""

import argparse
import importlib
import sys

#: name -> (module with ``main(args)`` and optionally ``add_arguments(parser)``, help)
COMMANDS = {
    "info": ("fastxent._info", "versions, backends, build and thread settings"),
    "check": ("fastxent._selfcheck", "correctness self-check of every backend against a "
                                     "float64 oracle"),
    "bench": ("fastxent._bench", "compare backends and the NumPy baseline (the main job)"),
    "tune": ("fastxent._tune", "measure this machine and write an auto-policy table"),
    "demo": ("fastxent.sklearn._demo", "train SoftmaxRegression on digits next to "
                                       "scikit-learn (needs fastxent[sklearn])"),
}
_WITH_OPTIONS = ("bench", "tune")  # imported up front for their --help; the rest lazily


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastxent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, text) in COMMANDS.items():
        command = sub.add_parser(name, help=text)
        if name in _WITH_OPTIONS:
            importlib.import_module(module).add_arguments(command)
    args = parser.parse_args(argv)
    return importlib.import_module(COMMANDS[args.command][0]).main(args) or 0


if __name__ == "__main__":
    sys.exit(main())
