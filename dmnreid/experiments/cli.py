"""``python -m dmnreid.experiments COMMAND``: one subcommand per experiment module.

Each module has ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dmnreid.config import ConfigError
from dmnreid.data_prep.records import DatasetError

COMMANDS = {
    "ablation": ("dmnreid.experiments.ablation",
                 "the paper's Table 1 with control, oracle and upper-bound rows, over seeds"),
    "alpha-sweep": ("dmnreid.experiments.alpha_sweep",
                    "clusters and mAP against the triangle threshold alpha, over seeds"),
    "unification": ("dmnreid.experiments.unification",
                    "pick-one for every camera against the averaged model, over seeds"),
    "profile": ("dmnreid.experiments.profile",
                "the paper's Tables 2 and 3: run times per image/batch and message sizes"),
    "stand-in": ("dmnreid.experiments.stand_in",
                 "whether this machine pretrains the stand-in docs/results were made with"),
    "scale": ("dmnreid.experiments.scale",
              "the whole pipeline in Flower for growing camera counts: time, rounds, bytes, "
              "memory per phase and their growth exponents"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dmnreid.experiments",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(commands.add_parser(name, help=help_text, description=help_text))
        modules[name] = module
    args = parser.parse_args(argv)
    try:
        return modules[args.command].run(args)
    except (ConfigError, DatasetError) as err:  # the user's settings or data: no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; the same command continues from them",
              file=sys.stderr)
        return 130
