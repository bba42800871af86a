"""What is deployed to Azure holds the app and nothing of the development tooling.

The deploy zip (infra/README.md) and `func azure functionapp publish` (.funcignore) must ship the
same four entries — function_app.py, host.json, requirements.txt, shared/ — and the code in them
must import nothing from devtools/, tests/ or bench/: the sandbox sources, the local host and
synthetic data stay in the repository, where `python -m shared.cli sandbox|serve|generate` runs them."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOYED = {"function_app.py", "host.json", "requirements.txt", "shared"}
DEV_ONLY = ("devtools", "tests", "bench")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


def funcignored(path: str, patterns: list[str]) -> bool:
    """Our .funcignore's two forms: ``name/`` (a folder anywhere), a top-level file's name."""
    folders = {p.rstrip("/") for p in patterns if p.endswith("/")}
    return bool(folders & set(path.split("/")[:-1])) or path in patterns


def test_funcignore_and_the_deploy_zip_ship_the_same_four_entries() -> None:
    patterns = [line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    published = {path.split("/")[0] for path in tracked_files() if not funcignored(path, patterns)}
    assert published == DEPLOYED
    readme = (ROOT / "infra" / "README.md").read_text(encoding="utf-8")
    (command,) = re.findall(r"^\s*zip -r app\.zip (.+)$", readme, re.MULTILINE)
    assert set(command.split()) - {"-x", "'*/__pycache__/*'"} == DEPLOYED


def test_the_deployed_package_imports_no_development_tooling(tmp_path: Path) -> None:
    """Copy what the zip holds into an empty folder and import every module there, as Azure would."""
    for name in DEPLOYED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tmp_path / name)
    assert not any((tmp_path / "shared").rglob("sandbox")) and not any((tmp_path / "shared").rglob("localhost"))
    code = (
        "import importlib, pkgutil, sys\n"
        "import function_app, shared\n"
        "names = [m.name for m in pkgutil.walk_packages(shared.__path__, 'shared.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"dev = sorted(m for m in sys.modules if m.split('.')[0] in {DEV_ONLY!r})\n"
        "print(len(names), dev)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    count, dev = run.stdout.split(" ", 1)
    assert int(count) > 50 and dev.strip() == "[]", run.stdout


def test_a_development_command_in_the_deployed_package_says_where_it_runs(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "shared", tmp_path / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for command in ("sandbox", "serve", "generate"):
        run = subprocess.run([sys.executable, "-m", "shared.cli", command], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, (command, run.stderr)
        (line,) = [ln for ln in run.stderr.splitlines() if ln.strip()]
        assert f"`{command}` is a development command" in line and "checkout of the repository" in line
