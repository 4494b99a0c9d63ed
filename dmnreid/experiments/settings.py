"""Options every experiment shares: ``--run-config``, ``--seeds``, ``--out``."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (the Jetson line): Flower depends on tomli
    import tomli as tomllib

from dmnreid.config import ConfigError, RunConfig


def add_run_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-config", action="append", default=[], metavar="SETTINGS",
                        help="run-config overrides as for `flwr run --run-config`: "
                             "'key=value key2=value2' (TOML values) or a .toml file; "
                             "repeatable")


def add_common(parser: argparse.ArgumentParser, out: str, seeds: str = "0,1,2") -> None:
    add_run_config(parser)
    parser.add_argument("--seeds", default=seeds,
                        help=f"comma-separated seeds (default {seeds})")
    parser.add_argument("--out", type=Path, default=Path(out),
                        help=f"output folder; finished runs in it are reused (default {out})")


def _value(text: str) -> object:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # an unquoted string, e.g. dataset=market1501


def parse_overrides(items: list[str]) -> dict[str, object]:
    """Flower's ``--run-config`` syntax: ``key=value`` pairs or TOML files."""
    values: dict[str, object] = {}
    for item in items:
        if item.endswith(".toml"):
            path = Path(item).expanduser()
            if not path.is_file():
                raise ConfigError(f"--run-config {item}: no such file")
            values.update(tomllib.loads(path.read_text()))
            continue
        for pair in shlex.split(item):
            key, sep, text = pair.partition("=")
            if not sep or not key:
                raise ConfigError(f"--run-config {pair!r}: expected key=value")
            values[key.strip()] = _value(text.strip())
    return values


def run_config(items: list[str], **fixed: object) -> RunConfig:
    """The defaults, the user's overrides, then what the experiment itself sets."""
    return configured(RunConfig.from_mapping({**RunConfig().to_mapping(),
                                              **parse_overrides(items)}), **fixed)


def configured(cfg: RunConfig, **changes: object) -> RunConfig:
    """``cfg`` with run-config keys changed (``bn-mode`` or ``bn_mode``), validated."""
    return RunConfig.from_mapping({**cfg.to_mapping(),
                                   **{RunConfig.key(k): v for k, v in changes.items()}})


def seeds(text: str, option: str = "--seeds") -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise ConfigError(f"{option} {text!r}: expected comma-separated integers") from err
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise ConfigError(f"{option} {text!r}: expected distinct seeds, 0 or more")
    return values


def progress_printer(experiment: str) -> Callable[[str], Callable[[str], None]]:
    """``printer(context)(message)`` prints ``[experiment context +elapsed] message``."""
    start = time.monotonic()

    def for_context(context: str) -> Callable[[str], None]:
        def say(message: str) -> None:
            elapsed = int(time.monotonic() - start)
            print(f"[{experiment} {context} +{elapsed // 60}m{elapsed % 60:02d}s] {message}",
                  file=sys.stderr, flush=True)
        return say
    return for_context
