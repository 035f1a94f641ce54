"""The `paperzoo` command.

    paperzoo fit|validate|test|predict --config X.yaml [--config ddp] [--trainer.max_steps 100]
    paperzoo list [--domain D]
    paperzoo check KEY [--quick] [--out PATH]
    paperzoo report [--results DIR] [--out FILE]
    paperzoo run KEY --config X.yaml
    paperzoo merge --config merge.yaml          (shorthand for `paperzoo run merge`)

The four Lightning verbs run LightningCLI in subclass mode over `BaseTask` and `BaseDataModule` (torchgeo's
pattern); every installed domain is imported through its method cards first, so short class names resolve.
`--config` also takes a trainer preset name (cpu, gpu, ddp, fsdp) or a packaged method config as KEY/NAME
(e.g. `wsd/tiny`). User mistakes end in one sentence on stderr and exit code 2.
"""

import argparse
import sys
import warnings
from importlib.resources import files
from pathlib import Path
from typing import Any

from paperzoo.core.errors import UserError

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")
PRESETS = ("cpu", "gpu", "ddp", "fsdp")


def preset_path(name: str) -> Path:
    return Path(str(files("paperzoo.core.presets") / f"{name}.yaml"))


def resolve_config(value: str) -> str:
    """A `--config` value as a file path: an existing file, a preset name, or KEY/NAME of a method config."""
    from paperzoo.core.card import discover_cards

    if Path(value).is_file() or value.lstrip().startswith(("{", "trainer:", "model:", "data:")):
        return value
    if value in PRESETS:
        return str(preset_path(value))
    key, _, name = value.partition("/")
    cards = discover_cards()
    if name and key in cards:
        return str(cards[key].config(name))
    known = [f"{k}/{n}" for k, card in cards.items() for n in card.configs()]
    raise UserError(
        f"config {value!r} is not a file, a trainer preset ({', '.join(PRESETS)}) "
        f"or a method config ({', '.join(known) or 'none installed'})"
    )


def resolve_config_args(argv: list[str]) -> list[str]:
    resolved = list(argv)
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            resolved[i + 1] = resolve_config(argv[i + 1])
        elif arg.startswith("--config="):
            resolved[i] = "--config=" + resolve_config(arg.split("=", 1)[1])
    return resolved


def lightning_main(argv: list[str]) -> None:
    from paperzoo.core.card import import_all_methods
    from paperzoo.core.lightning_cli import PaperzooCLI

    import_all_methods()
    saved_argv = sys.argv
    sys.argv = [sys.argv[0], *resolve_config_args(argv)]  # LightningCLI parses sys.argv: give it the resolved one
    try:
        PaperzooCLI()
    finally:
        sys.argv = saved_argv


def list_main(args: argparse.Namespace) -> None:
    from paperzoo.core.card import discover_cards
    from paperzoo.core.checks import read_results

    results = read_results(args.results) if args.results.is_dir() else {}
    rows = [("key", "#", "domain", "kind", "configs", "last check", "title")]
    for card in discover_cards().values():
        if args.domain and card.domain != args.domain:
            continue
        result = results.get(card.key)
        verdict = (
            "-" if result is None else ("pass" if result.passed else "FAIL") + (" (quick)" if result.quick else "")
        )
        rows.append(
            (
                card.key,
                str(card.number or "-"),
                card.domain,
                card.kind,
                ",".join(card.configs()) or "-",
                verdict,
                card.title,
            )
        )
    if len(rows) == 1:
        raise UserError(f"no installed method is in domain {args.domain!r}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])


def check_main(args: argparse.Namespace) -> None:
    from paperzoo.core.card import get_card, load_object
    from paperzoo.core.checks import result_path, run_check, write_result

    card = get_card(args.key)
    if card.check is None:
        raise UserError(f"method {args.key!r} has no claim check")
    result = run_check(load_object(card.check), quick=args.quick)
    out = args.out or result_path(card.key, args.quick)
    write_result(result, out)
    print(result.table())
    print(f"written to {out}")


def report_main(args: argparse.Namespace) -> None:
    from paperzoo.core.report import render_report

    if not args.results.is_dir():
        raise UserError(f"results directory {args.results} does not exist; run `paperzoo check KEY` first")
    render_report(args.results, args.out)
    print(f"written {args.out}")


def run_main(argv: list[str]) -> None:
    from jsonargparse import ActionConfigFile, ArgumentParser

    from paperzoo.core.card import get_card, load_object

    if not argv or argv[0].startswith("-"):
        raise UserError("paperzoo run needs a method key, e.g. `paperzoo run KEY --config X.yaml`")
    card = get_card(argv[0])
    if card.run is None:
        raise UserError(f"method {card.key!r} is of kind {card.kind}: train it with `paperzoo fit`, not `run`")
    function = load_object(card.run)
    parser = ArgumentParser(prog=f"paperzoo run {card.key}", exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(function, fail_untyped=True)
    # --config takes a file or KEY/NAME of a packaged config, as for the Lightning verbs
    config = parser.parse_args(resolve_config_args(argv[1:]))  # type and range errors surface here, before any work
    config.pop("config", None)
    init = parser.instantiate_classes(config)
    result = function(**{k: v for k, v in init.items() if k != "__path__"})
    if result is not None:
        print(format_run_result(result))


def format_run_result(result: Any) -> str:
    """What `paperzoo run` prints: a dict of figures one per line, names aligned, floats to 6 significant digits."""
    if not isinstance(result, dict):
        return str(result)
    width = max((len(str(name)) for name in result), default=0)
    return "\n".join(
        f"{str(name).ljust(width)}  {f'{value:.6g}' if isinstance(value, float) else value}"
        for name, value in result.items()
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paperzoo", description="Train, check and compare paperzoo methods.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb in LIGHTNING_VERBS:
        sub.add_parser(verb, help=f"LightningCLI {verb} (see `paperzoo {verb} --help`)", add_help=False)
    p = sub.add_parser("list", help="the implemented methods, their configs and last claim result")
    p.add_argument("--domain", help="only this domain (core, speech, vision, ...)")
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    p = sub.add_parser("check", help="run a method's claim check and write its result JSON")
    p.add_argument("key")
    p.add_argument("--quick", action="store_true", help="the < 60 s mode")
    p.add_argument("--out", type=Path, help="result file (default benchmarks/results/KEY[.quick].json)")
    p = sub.add_parser("report", help="render benchmarks/RESULTS.md and plots from the result files")
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS.md"))
    sub.add_parser("run", help="run a non-training method: paperzoo run KEY --config X.yaml", add_help=False)
    sub.add_parser("merge", help="merge checkpoints: paperzoo merge --config merge.yaml (= run merge)", add_help=False)
    return parser


def dispatch(argv: list[str]) -> None:
    if argv and argv[0] in LIGHTNING_VERBS:
        lightning_main(argv)
        return
    if argv and argv[0] == "run":
        run_main(argv[1:])
        return
    if argv and argv[0] == "merge":
        run_main(argv)  # the verb is the method key
        return
    args = build_parser().parse_args(argv)
    {"list": list_main, "check": check_main, "report": report_main}[args.command](args)


def condense_parser_error(message: str) -> str:
    """jsonargparse's error for a subclass value lists every Union member it tried; keep the one that matters."""
    lines = message.splitlines()
    reasons: list[str] = []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("- "):
            reasons.append(stripped[2:])
        elif reasons and line.startswith("    ") and not stripped.startswith(("Given value", "Subtypes")):
            reasons[-1] += " " + stripped
    reasons = [r for r in reasons if "Expected a <class 'NoneType'>" not in r]
    head = lines[0]
    if reasons and ":" in head:
        head = head.split(":", 1)[0] + ": " + reasons[0]
    return " ".join(head.split())


def user_error_message(error: BaseException) -> str | None:
    """The one-sentence message of a user's mistake, or None for a bug (which keeps its traceback)."""
    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if isinstance(error, (UserError, MisconfigurationException)):
        return str(error)
    if isinstance(error, ArgumentError):
        return condense_parser_error(str(error))
    cause = error.__cause__ or error.__context__
    return user_error_message(cause) if cause is not None else None


def main(argv: list[str] | None = None) -> Any:
    argv = sys.argv[1:] if argv is None else argv
    # torch 2.11 deprecates an API that lightning 2.6 calls on every batch; the warning is not actionable for users
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    try:
        dispatch(argv)
    except Exception as error:  # noqa: BLE001 - user mistakes become one sentence, bugs re-raise
        message = user_error_message(error)
        if message is None:
            raise
        print(f"paperzoo: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
