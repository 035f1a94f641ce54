"""The workspace's shape (DESIGN.md): one PEP 420 namespace, members that depend on core only, cards for all."""

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))


def test_no_member_ships_a_paperzoo_init():
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.glob("packages/*/src/paperzoo/__init__.py")]
    assert not offenders, f"these break the shared paperzoo namespace (PEP 420): {offenders}"


@pytest.mark.parametrize("member", MEMBERS, ids=lambda p: p.name)
def test_member_layout(member):
    project = tomllib.loads((member / "pyproject.toml").read_text())["project"]
    domain = member.name
    assert project["name"] == ("paperzoo-3d" if domain == "threed" else f"paperzoo-{domain}")
    assert (member / "src" / "paperzoo" / domain / "__init__.py").is_file()
    assert (member / "README.md").is_file() and (member / "tests").is_dir()
    # lower bounds only; members depend on core and never on each other
    for requirement in project.get("dependencies", []):
        assert "==" not in requirement, f"{member.name} pins {requirement}: exact pins belong in uv.lock"
        if requirement.startswith("paperzoo-"):
            assert requirement.startswith("paperzoo-core"), f"{member.name} depends on {requirement}"


def test_every_card_is_complete():
    from paperzoo.core.card import discover_cards, load_object

    cards = discover_cards()
    assert "wsd" in cards
    for card in cards.values():
        for path in (*card.entry_points, card.check, card.run, card.task):
            if path:
                load_object(path)
        if card.kind in ("train", "component"):
            assert "tiny" in card.configs(), f"{card.key} ships no configs/tiny.yaml"
        assert card.check, f"{card.key} has no claim check"
