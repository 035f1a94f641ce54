"""Slow tier: each member builds as a wheel and imports alone in a fresh virtual environment."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))


@pytest.mark.slow
@pytest.mark.parametrize("member", MEMBERS, ids=lambda p: p.name)
def test_wheel_installs_and_imports_alone(member, tmp_path):
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(member)], check=True)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    # the lock's versions, so the install reuses uv's cache; core comes from its own freshly built wheel
    constraints = tmp_path / "constraints.txt"
    exported = subprocess.run(
        [uv, "export", "--frozen", "--all-packages", "--no-hashes", "--no-emit-workspace", "--no-dev"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    constraints.write_text(exported)
    wheels = [str(wheel)]
    if member.name != "core":
        subprocess.run([uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(ROOT / "packages/core")])
        wheels += [str(p) for p in (tmp_path / "dist").glob("paperzoo_core-*.whl")]
    subprocess.run(
        [uv, "pip", "install", "--python", str(python), "--constraint", str(constraints), *wheels], check=True
    )
    domain = member.name
    code = f"import paperzoo.{domain}, paperzoo.core.cli; print(paperzoo.{domain}.__file__)"
    imported = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert str(venv) in imported.stdout  # imported from the wheel, not the workspace
    listed = subprocess.run([str(venv / "bin" / "paperzoo"), "list"], capture_output=True, text=True, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
