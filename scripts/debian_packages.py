"""The Debian packages that default datasets need, collected from every member's `[tool.paperzoo]
debian-packages`, and installed with apt-get when running as root (otherwise one message names them)."""

import argparse
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def required_packages() -> list[str]:
    names: set[str] = set()
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        config = tomllib.loads(pyproject.read_text()).get("tool", {}).get("paperzoo", {})
        names.update(config.get("debian-packages", []))
    return sorted(names)


def missing(packages: list[str]) -> list[str]:
    if shutil.which("dpkg-query") is None:
        return packages
    absent = []
    for name in packages:
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
        if "install ok installed" not in status.stdout:
            absent.append(name)
    return absent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--install", action="store_true", help="install what is missing (root only)")
    args = parser.parse_args()
    absent = missing(required_packages())
    if not absent:
        return
    if not args.install or os.geteuid() != 0:
        sys.exit(
            f"default datasets need these Debian packages: {' '.join(absent)} (sudo apt-get install {' '.join(absent)})"
        )
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *absent],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


if __name__ == "__main__":
    main()
