"""`MethodCard`: what paperzoo knows about one paper's method, discovered through the `paperzoo.methods`
entry-point group (each member's pyproject registers `KEY = "paperzoo.<domain>.<module>:CARD"`)."""

import importlib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from paperzoo.core.errors import UserError

Kind = Literal["train", "posthoc", "inference", "eval", "component"]
ENTRY_POINT_GROUP = "paperzoo.methods"


@dataclass(frozen=True)
class MethodCard:
    """One implemented method.

    Args:
        key: short unique name used on the command line (`paperzoo check KEY`).
        number: the paper's number in CATALOG.md; 0 for a method outside the catalog (a baseline such as DLinear).
        title: the paper's title.
        arxiv: arXiv id.
        kind: train (fit through the CLI), posthoc (acts on trained weights), inference, eval, or component
            (a reusable part, exercised through a training config).
        domain: the package it lives in (core, speech, vision, ...).
        entry_points: public objects, as "module:attr".
        claim: the paper's key claim that `check` reproduces, in one sentence.
        reference_code: the authors' code (for facts; never copied).
        config_package: the package holding `configs/*.yaml` (must contain `tiny.yaml` for train-like kinds).
        check: "module:function" of the claim check, `check(quick: bool) -> ClaimResult`.
        run: "module:function" that `paperzoo run KEY` calls, for non-training kinds.
        task: "module:Class" of the LightningModule, for kinds trained through the CLI (its datamodule belongs
            in `entry_points`).
    """

    key: str
    number: int
    title: str
    arxiv: str
    kind: Kind
    domain: str
    entry_points: tuple[str, ...]
    claim: str
    reference_code: str
    config_package: str | None = None
    check: str | None = None
    run: str | None = None
    task: str | None = None

    def import_modules(self) -> None:
        """Import the modules of the task and the public entry points (registers their classes with the CLI)."""
        for path in (self.task, *self.entry_points):
            if path:
                importlib.import_module(path.partition(":")[0])

    def configs(self) -> dict[str, Path]:
        """Config name (file stem) -> path of every packaged config."""
        if self.config_package is None:
            return {}
        found = [Path(str(entry)) for entry in files(self.config_package).iterdir() if entry.name.endswith(".yaml")]
        return {path.stem: path for path in sorted(found)}

    def config(self, name: str) -> Path:
        configs = self.configs()
        if name not in configs:
            raise UserError(f"method {self.key!r} has no config {name!r}; it has {', '.join(configs) or 'none'}")
        return configs[name]


def load_object(path: str) -> Any:
    """Import "package.module:attribute"."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@cache
def discover_cards() -> dict[str, MethodCard]:
    """Every installed card by key. Two cards with one key are an error naming both."""
    cards: dict[str, MethodCard] = {}
    origins: dict[str, str] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        card = entry.load()
        if not isinstance(card, MethodCard):
            raise TypeError(f"entry point {entry.value} is a {type(card).__name__}, not a MethodCard")
        origin = f"{entry.value} (from {entry.dist.name if entry.dist else 'unknown'})"
        if card.key in cards:
            raise UserError(f"two methods share the key {card.key!r}: {origins[card.key]} and {origin}")
        cards[card.key], origins[card.key] = card, origin
    return dict(sorted(cards.items()))


def import_all_methods() -> None:
    """Import every installed method's modules, so their classes resolve by short name in configs."""
    for card in discover_cards().values():
        card.import_modules()


def get_card(key: str) -> MethodCard:
    cards = discover_cards()
    if key not in cards:
        raise UserError(f"unknown method {key!r}; installed methods are: {', '.join(cards) or 'none'}")
    return cards[key]
