"""``harbinger``: one command line for every component.

Each subcommand lives with its component (``webhooks/cli.py``, ``models/cli.py``, ...)
as a pair of functions: ``add_*_arguments(parser)`` and ``run_*(args) -> int``. This
module only routes, and imports a component when its command is asked for, so that
``harbinger --help`` does not load onnxruntime and scikit-learn.

Commands that are not part of the product (``harbinger cluster``, the local control plane
of the development harness) come from other installed distributions through the
``harbinger.commands`` entry-point group, each a :class:`Command`; Harbinger's own wheel
carries none of them.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import cast

from harbinger import __version__
from harbinger.errors import HarbingerError, InvalidInput

#: Entry-point group through which other distributions add commands (values are :class:`Command`).
PLUGIN_GROUP = "harbinger.commands"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


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
    Command("train-cluster", "train every opted-in service's model from its history and keep it in the cluster",
            "models.cli", "add_train_cluster_arguments", "run_train_cluster"),
    Command("model-mirror", "mirror the cluster's models into a local directory (the webhook's and planner's "
            "sidecar)", "models.cli", "add_model_mirror_arguments", "run_model_mirror"),
    Command("forecast", "print a trained forecaster's prediction for the next horizon",
            "models.cli", "add_forecast_arguments", "run_forecast"),
    Command("evaluate", "backtest the forecaster on a trace against seasonal-naive and Prophet",
            "models.cli", "add_evaluate_arguments", "run_evaluate"),
    Command("certs", "make the CA and serving certificates and inject the CA bundle",
            "certs.cli", "add_arguments", "run"),
    Command("uninstall", "give back what Harbinger changed (webhook, floors, faults) before deleting it",
            "harbinger.uninstall", "add_arguments", "run"),
)

Runner = Callable[[argparse.Namespace], int]


@functools.cache
def all_commands() -> tuple[Command, ...]:
    """Harbinger's own commands, then those other installed distributions add."""
    plugins = []
    for entry in entry_points(group=PLUGIN_GROUP):
        # A broken plugin costs its own command, never the product's: say so and go on.
        try:
            command = entry.load()
        except Exception as exc:
            print(f"harbinger: ignoring command {entry.name!r} ({entry.value}): {exc}", file=sys.stderr)
            continue
        if not isinstance(command, Command):
            print(f"harbinger: ignoring command {entry.name!r} ({entry.value}): not a harbinger.cli.Command",
                  file=sys.stderr)
            continue
        plugins.append(command)
    own = {c.name for c in COMMANDS}
    return COMMANDS + tuple(p for p in plugins if p.name not in own)


def _load(command: Command) -> tuple[Callable[[argparse.ArgumentParser], None], Runner]:
    module = importlib.import_module(command.module)
    add = getattr(module, command.add_arguments)
    run = getattr(module, command.run)
    return cast(Callable[[argparse.ArgumentParser], None], add), cast(Runner, run)


def build_parser(selected: str | None) -> tuple[argparse.ArgumentParser, dict[str, Runner]]:
    parser = argparse.ArgumentParser(
        prog="harbinger",
        description="Harbinger scales a Kubernetes cluster before its traffic arrives, "
        "and proves with controlled chaos that it survives the peak it predicted.",
    )
    parser.add_argument("--version", action="version", version=f"harbinger {__version__}")
    parser.add_argument("--log-level", choices=LOG_LEVELS,
                        help="log verbosity (default: $HARBINGER_LOG_LEVEL, else INFO)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    runners: dict[str, Runner] = {}
    for command in all_commands():
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        if command.name == selected:
            add, run = _load(command)
            # Accepted after the command too (``harbinger webhook --log-level DEBUG``);
            # SUPPRESS keeps a global ``--log-level`` from being overwritten by the default.
            sub.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS,
                             help="log verbosity (default: $HARBINGER_LOG_LEVEL, else INFO)")
            add(sub)
            runners[command.name] = run
    return parser, runners


def exit_code(command: str, body: Callable[[], int]) -> int:
    """Run a command's body and map what it raised to one stderr line and an exit code, the
    same for every command: 2 bad input, 1 an operational failure (the cluster, Prometheus,
    a file that cannot be written), 130 interrupted."""
    try:
        return body()
    except InvalidInput as exc:
        print(f"harbinger {command}: error: {exc}", file=sys.stderr)
        return 2
    except HarbingerError as exc:
        print(f"harbinger {command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"harbinger {command}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Find the command after the global options (``--log-level WARNING extender``) so only
    # its component is imported.
    globals_only = argparse.ArgumentParser(add_help=False)
    globals_only.add_argument("--log-level")
    _, rest = globals_only.parse_known_args(args_list)
    names = {c.name for c in all_commands()}
    selected = next((a for a in rest if not a.startswith("-")), None)
    selected = selected if selected in names else None
    parser, runners = build_parser(selected)
    args = parser.parse_args(args_list)
    return exit_code(args.command, lambda: _run(args, runners[args.command]))


def _run(args: argparse.Namespace, runner: Runner) -> int:
    # The flag wins; else the settings (HARBINGER_LOG_LEVEL or the settings file), checked
    # there like every other setting.
    from harbinger.logs import configure
    from harbinger.settings import load_settings

    settings = load_settings()
    configure(args.log_level or settings.log_level, settings.log_format)
    return runner(args)


if __name__ == "__main__":  # pragma: no cover
    # `python -m harbinger.cli` runs this file as __main__, a second copy of the module whose
    # Command class plugins do not use: go through the imported module.
    from harbinger.cli import main as _main

    sys.exit(_main())
