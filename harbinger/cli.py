"""``harbinger``: one command line for every component.

Each subcommand lives with its component (``webhooks/cli.py``, ``models/cli.py``, ...)
as a pair of functions: ``add_*_arguments(parser)`` and ``run_*(args) -> int``. This
module only routes, and imports a component when its command is asked for, so that
``harbinger --help`` does not load onnxruntime and scikit-learn.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from harbinger import __version__
from harbinger.errors import HarbingerError, InvalidInput, NotBuiltYet


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    module: str
    add_arguments: str
    run: str


COMMANDS: tuple[Command, ...] = (
    Command("webhook", "serve the mutating admission webhook that stamps forecasts onto pods (HTTPS)",
            "webhooks.cli", "add_arguments", "run"),
    Command("extender", "serve the kube-scheduler extender that places warm-up pods by bandwidth headroom",
            "extender.cli", "add_arguments", "run"),
    Command("plan", "run the planner: raise replica floors ahead of predicted peaks, bottlenecks first",
            "scaler.cli", "add_plan_arguments", "run_plan"),
    Command("simulate", "replay a traffic trace through the HPA, Harbinger's planner and an oracle",
            "scaler.cli", "add_simulate_arguments", "run_simulate"),
    Command("chaos", "generate, run and report chaos experiments sized by the forecast",
            "chaos.cli", "add_arguments", "run"),
    Command("train", "train a service's traffic forecaster on a CSV trace and export it to ONNX",
            "models.cli", "add_train_arguments", "run_train"),
    Command("forecast", "print a trained forecaster's prediction for the next horizon",
            "models.cli", "add_forecast_arguments", "run_forecast"),
    Command("evaluate", "backtest the forecaster on a trace against seasonal-naive and Prophet",
            "models.cli", "add_evaluate_arguments", "run_evaluate"),
    Command("certs", "make the CA and serving certificates and inject the CA bundle",
            "certs.cli", "add_arguments", "run"),
    Command("cluster", "start or stop the local control plane (etcd, apiserver, scheduler, KWOK)",
            "harbinger.localcluster.cli", "add_arguments", "run"),
)

Runner = Callable[[argparse.Namespace], int]


def _load(command: Command) -> tuple[Callable[[argparse.ArgumentParser], None], Runner]:
    """Import a command's module; a component not built yet is reported, never faked."""
    try:
        module = importlib.import_module(command.module)
        add = getattr(module, command.add_arguments)
        run = getattr(module, command.run)
    except (ModuleNotFoundError, AttributeError) as exc:
        missing = getattr(exc, "name", None)
        if isinstance(exc, ModuleNotFoundError) and missing and not command.module.startswith(missing):
            raise  # a real missing dependency, not a missing component
        raise NotBuiltYet(f"'harbinger {command.name}' is not built yet ({command.module})") from exc
    return cast(Callable[[argparse.ArgumentParser], None], add), cast(Runner, run)


def build_parser(selected: str | None) -> tuple[argparse.ArgumentParser, dict[str, Runner]]:
    parser = argparse.ArgumentParser(
        prog="harbinger",
        description="Harbinger scales a Kubernetes cluster before its traffic arrives, "
        "and proves with controlled chaos that it survives the peak it predicted.",
    )
    parser.add_argument("--version", action="version", version=f"harbinger {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    runners: dict[str, Runner] = {}
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        if command.name == selected:
            add, run = _load(command)
            add(sub)
            runners[command.name] = run
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Find the command after the global options (``--log-level WARNING extender``) so only
    # its component is imported.
    globals_only = argparse.ArgumentParser(add_help=False)
    globals_only.add_argument("--log-level")
    _, rest = globals_only.parse_known_args(args_list)
    names = {c.name for c in COMMANDS}
    selected = next((a for a in rest if not a.startswith("-")), None)
    selected = selected if selected in names else None
    try:
        parser, runners = build_parser(selected)
    except NotBuiltYet as exc:
        print(f"harbinger: {exc}", file=sys.stderr)
        return 3
    args = parser.parse_args(args_list)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return runners[args.command](args)
    except InvalidInput as exc:
        print(f"harbinger {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except HarbingerError as exc:
        print(f"harbinger {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
