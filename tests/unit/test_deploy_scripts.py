"""The Procfile and the deploy scripts as a new user runs them: commands found without activating the venv,
the worker pushing to the Procfile's Pushgateway, the scripts parseable."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import pytest

from schemas.settings import REPO_ROOT

PROCFILE = REPO_ROOT / "Procfile"


def _procfile() -> dict[str, str]:
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


def _executables(command: str) -> list[str]:
    """The programs a Procfile line runs: its own (after VAR=value words) and any inside ``$(...)``."""
    found = [inner.split()[0] for inner in re.findall(r"\$\(([^)]*)\)", command)]
    words = shlex.split(re.sub(r"\$\([^)]*\)", "X", command))
    found.append(next(w for w in words if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)))
    return found


@pytest.mark.parametrize("name", sorted(_procfile()))
def test_procfile_commands_are_found_without_the_venv_on_path(name: str) -> None:
    """honcho runs each line with /bin/sh in the repo: `ticklake` must not depend on an activated venv."""
    system_path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    for program in _executables(_procfile()[name]):
        if "/" in program:
            assert (REPO_ROOT / program).exists(), f"{name}: {program} does not exist (run deploy/install.sh)"
        else:
            assert shutil.which(program, path=system_path), f"{name}: {program} is not on a plain PATH"


def test_procfile_worker_pushes_to_the_procfile_pushgateway_by_default() -> None:
    entries = _procfile()
    listen = re.search(r"--web.listen-address=(\S+)", entries["pushgateway"]).group(1)  # type: ignore[union-attr]
    assert f"PROMETHEUS_PUSHGATEWAY_URL=${{PROMETHEUS_PUSHGATEWAY_URL:-http://{listen}}}" in entries["worker"]


def test_procfile_worker_line_resolves_the_default_in_a_shell() -> None:
    command = _procfile()["worker"].replace(".venv/bin/ticklake worker", "printenv PROMETHEUS_PUSHGATEWAY_URL")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_PUSHGATEWAY_URL"}
    assert subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True).stdout.strip() == "http://127.0.0.1:9091"


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO_ROOT / "deploy").glob("*.sh")))
def test_deploy_scripts_parse(script: str) -> None:
    result = subprocess.run(["bash", "-n", str(REPO_ROOT / "deploy" / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_install_refuses_an_unknown_option() -> None:
    result = subprocess.run(["bash", str(REPO_ROOT / "deploy" / "install.sh"), "--tset"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown option --tset" in result.stderr
