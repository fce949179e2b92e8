"""Command line: ``python -m fastxent <command>``; ``python -m fastxent <command> --help``."""

import argparse
import importlib
import sys

#: name -> (module with main(args) and optionally add_arguments(parser), one-line help)
COMMANDS = {
    "bench": ("fastxent.bench.run", "compare the backends with the NumPy baseline, verified "
                                    "(the main job; about 2 minutes on 2 cores)"),
    "info": ("fastxent._info", "versions, backends (and why one is missing), build and "
                               "thread settings"),
    "check": ("fastxent.bench.selfcheck", "a few seconds' correctness check of every backend "
                                          "against a float64 oracle"),
    "tune": ("fastxent.bench.tune", "measure this machine and write auto's exceptions "
                                    "(about 2 minutes)"),
    "overhead": ("fastxent.bench.overhead", "the per-call cost of the Python layers on a small "
                                            "batch, per backend"),
    "warmup": ("fastxent.bench.warmup", "compile and cache the Numba kernels ahead of time"),
    "fitbench": ("fastxent.bench.fit", "SoftmaxRegression against scikit-learn's "
                                       "LogisticRegression (needs fastxent[sklearn])"),
    "linbench": ("fastxent.bench.linear", "fused linear + cross-entropy against its GEMMs and "
                                          "PyTorch: time and peak memory"),
    "dashboard": ("fastxent.bench.dashboard", "the asv dashboard as a page that works offline "
                                              "(--output DIR, --serve)"),
    "demo": ("fastxent.sklearn._demo", "train SoftmaxRegression on digits next to "
                                       "scikit-learn (needs fastxent[sklearn])"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastxent",
        description="fastxent: softmax and sigmoid cross-entropy with logits for the CPU. "
                    "Commands:")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    argv = sys.argv[1:] if argv is None else list(argv)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, text) in COMMANDS.items():
        command = sub.add_parser(name, help=text, description=text)
        if name == wanted:  # only the command asked for is imported (its options)
            add = getattr(importlib.import_module(module), "add_arguments", None)
            if add is not None:
                add(command)
    args = parser.parse_args(argv)
    return importlib.import_module(COMMANDS[args.command][0]).main(args) or 0


if __name__ == "__main__":
    sys.exit(main())
