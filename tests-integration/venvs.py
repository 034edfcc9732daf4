"""Build the distributions as wheels and install them into fresh virtual environments."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH = os.environ.get("FABRIC_TORCH", "torch==2.13.0")


def uv() -> str:
    """The uv executable (installed into the test session's environment)."""
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        raise RuntimeError("uv is needed to build wheels and environments: pip install uv")
    return found


def uv_environment() -> dict[str, str]:
    """The process environment for uv: point it at local wheels where pip is (never a CUDA torch here)."""
    env = dict(os.environ)
    if env.get("PIP_FIND_LINKS") and not env.get("UV_FIND_LINKS"):
        env["UV_FIND_LINKS"] = env["PIP_FIND_LINKS"]
    env.pop("VIRTUAL_ENV", None)
    return env


def build_wheel(project: Path, out_dir: Path) -> Path:
    """Build ``project`` into a wheel in ``out_dir`` and return the wheel's path."""
    before = set(out_dir.glob("*.whl"))
    subprocess.run(
        [uv(), "build", "--wheel", "--quiet", "--out-dir", str(out_dir), str(project)],
        check=True,
        env=uv_environment(),
    )
    (wheel,) = set(out_dir.glob("*.whl")) - before
    return wheel


class FreshEnvironment:
    """A new virtual environment with torch and the given wheels installed, nothing else.

    Args:
        path: Where to create it.
        requirements: Wheel paths, or requirement strings such as
            ``"fabric-localsgd[test] @ file:///.../fabric_localsgd-0.1.0-py3-none-any.whl"``.
        no_deps: Wheels installed afterwards without their dependencies (plugins whose heavy
            dependency is replaced by a stand-in).
    """

    def __init__(self, path: Path, requirements: list[Path | str], no_deps: list[Path] | None = None) -> None:
        self.path = path
        install = [uv(), "pip", "install", "--quiet", "--python", str(self.python_path)]
        subprocess.run(
            [uv(), "venv", "--quiet", "--python", sys.executable, str(path)], check=True, env=uv_environment()
        )
        subprocess.run([*install, TORCH, *map(str, requirements)], check=True, env=uv_environment())
        if no_deps:
            subprocess.run([*install, "--no-deps", *map(str, no_deps)], check=True, env=uv_environment())

    @property
    def python_path(self) -> Path:
        """The environment's interpreter."""
        return self.path / "bin" / "python"

    def run(
        self,
        *command: str,
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 300,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command from the environment's ``bin`` directory and capture its output."""
        executable = str(self.path / "bin" / command[0])
        full_env = {**os.environ, **(env or {})}
        full_env.pop("VIRTUAL_ENV", None)
        # The environment is thrown away: let its processes cache bytecode (under the
        # environment, not the source tree), so the second process importing torch is fast.
        full_env.pop("PYTHONDONTWRITEBYTECODE", None)
        full_env["PYTHONPYCACHEPREFIX"] = str(self.path / "pycache")
        for name in ("FABRIC_DISABLE_PLUGINS", "FABRIC_LOAD_PLUGINS"):
            if env is None or name not in env:
                full_env.pop(name, None)
        result = subprocess.run(
            [executable, *command[1:]], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} exited with {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def python(
        self, code: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet in the environment."""
        return self.run("python", "-c", textwrap.dedent(code), env=env, check=check)
