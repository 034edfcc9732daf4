"""Test, lint and benchmark sessions. `nox` runs the default set (what CI runs).

Every session runs in its own uv-managed virtual environment. Where the machine keeps
local torch wheels (PIP_FIND_LINKS), uv is pointed at them too (uv reads only
UV_FIND_LINKS), so the CPU build of torch is used instead of a multi-GB CUDA download;
elsewhere torch comes from the package index.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYTHON = os.environ.get("FABRIC_PYTHON", "3.11")
TORCH = os.environ.get("FABRIC_TORCH", "torch==2.13.0")
TEST_TOOLS = ("pytest>=8", "pytest-timeout>=2.3")
# The examples' progress bar and plots (both optional in the scripts themselves).
EXAMPLE_TOOLS = ("tqdm", "matplotlib")
# torch_xla works only with the torch release of its own version: fabric-xla's session
# installs this pair instead of TORCH.
XLA_STACK = tuple(os.environ.get("FABRIC_XLA_STACK", "torch==2.9.0 torch_xla==2.9.0").split())

if os.environ.get("PIP_FIND_LINKS") and not os.environ.get("UV_FIND_LINKS"):
    os.environ["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]

# Bytecode: a machine that sets PYTHONDONTWRITEBYTECODE (this project's CI does) makes every
# process compile torch's Python sources again: `import torch, deepspeed` takes 3.0 s instead
# of 1.35 s, and the tests start hundreds of processes. The sessions write bytecode, as an
# installed package has, under .nox/pycache, so the source tree stays clean.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ.setdefault("PYTHONPYCACHEPREFIX", str(ROOT / ".nox" / "pycache"))

nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [
    "lint",
    "typecheck",
    "core",
    "ddp",
    "fsdp",
    "deepspeed",
    "xla",
    "integration",
    "portability",
    "docs",
]


def _deepspeed_on_cpu(session: nox.Session) -> None:
    """DeepSpeed on its CPU accelerator, with C++ ops cached where they outlive the session's environment."""
    session.env["DS_ACCELERATOR"] = "cpu"
    session.env["TORCH_EXTENSIONS_DIR"] = os.environ.get(
        "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "fabric-deepspeed-ops")
    )


def _packages(*names: str) -> list[str]:
    args: list[str] = []
    for name in names:
        args += ["-e", str(ROOT / "packages" / name)]
    return args


@nox.session(python=PYTHON)
def core(session: nox.Session) -> None:
    """fabric-core's unit tests, with torch, pluggy, pytest and the optional tensorboard extra.

    No plugin is installed; the tests that need tensorboard absent hide it themselves.
    """
    session.install(TORCH, *TEST_TOOLS, "-e", f"{ROOT / 'packages' / 'fabric-core'}[tensorboard]")
    session.run("pytest", "packages/fabric-core/tests", *session.posargs)


@nox.session(python=PYTHON)
def ddp(session: nox.Session) -> None:
    """fabric-ddp's tests: real 2-process gloo groups launched every supported way."""
    session.install(TORCH, *TEST_TOOLS, *_packages("fabric-core", "fabric-ddp"))
    session.run("pytest", "packages/fabric-ddp/tests", *session.posargs)


@nox.session(python=PYTHON)
def fsdp(session: nox.Session) -> None:
    """fabric-fsdp's tests: FSDP2, tensor parallel and DCP checkpoints on 2 and 4 CPU processes (gloo).

    fabric-ddp is installed too: the memory test measures DDP on the same model.
    """
    session.install(TORCH, *TEST_TOOLS, *_packages("fabric-core", "fabric-ddp", "fabric-fsdp"))
    session.run("pytest", "packages/fabric-fsdp/tests", *session.posargs)


@nox.session(python=PYTHON)
def deepspeed(session: nox.Session) -> None:
    """fabric-deepspeed's tests: real ZeRO 1-3 runs on 2 CPU processes (DeepSpeed's CPU accelerator, gloo).

    DeepSpeed compiles C++ ops the first time they are used (minutes each on a CPU). The
    tests avoid them, and TORCH_EXTENSIONS_DIR points at a cache that outlives this
    session's fresh environment, so an op that does get built is built once per machine.
    """
    session.install(TORCH, *TEST_TOOLS, *_packages("fabric-core", "fabric-deepspeed"))
    _deepspeed_on_cpu(session)
    session.run("pytest", "packages/fabric-deepspeed/tests", *session.posargs)


@nox.session(python=PYTHON)
def xla(session: nox.Session) -> None:
    """fabric-xla's tests on XLA:CPU, in an environment with torch_xla and its own torch.

    The pair is XLA_STACK (torch 2.9.0 from the package index is a CUDA build: about 4 GB to
    download on a fresh machine). ``--no-config`` keeps uv from applying the workspace's
    torch constraint. The multi-process tests need a TPU and are skipped elsewhere. The XLA
    guide's code blocks run here too, on XLA:CPU (the portability session has no torch_xla).
    """
    session.install("--no-config", *XLA_STACK, *TEST_TOOLS, *_packages("fabric-core", "fabric-xla"))
    session.run("pytest", "packages/fabric-xla/tests", *session.posargs)
    session.run(
        "pytest", "tests-portability/test_docs_snippets.py", "-k", "xla.md", env={"PJRT_DEVICE": "CPU"}
    )


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Cross-distribution tests: wheels in fresh virtual environments, and the tables of user mistakes.

    The mistake tables (``test_mistakes_*.py``) run in this session's environment, which holds
    every CPU plugin (DeepSpeed on its CPU accelerator); the fresh environments hold only what
    each test installs.
    """
    session.install(
        TORCH, *TEST_TOOLS, "uv", *_packages("fabric-core", "fabric-ddp", "fabric-fsdp", "fabric-deepspeed")
    )
    _deepspeed_on_cpu(session)
    session.run("pytest", "tests-integration", *session.posargs)


@nox.session(python=PYTHON)
def portability(session: nox.Session) -> None:
    """The seed's snippets, the docs' code blocks, one loop under every first-party CPU strategy, the examples.

    The loop must give the same losses as one process and resume exactly. Needs every CPU
    plugin at once (DeepSpeed runs on its CPU accelerator, as in the
    deepspeed session, with the same cache for C++ ops that do get built).
    """
    session.install(
        TORCH,
        *TEST_TOOLS,
        *EXAMPLE_TOOLS,
        "scikit-learn",
        "-e",
        f"{ROOT / 'packages' / 'fabric-core'}[tensorboard]",  # the docs' TensorBoard block runs too
        *_packages("fabric-ddp", "fabric-fsdp", "fabric-deepspeed"),
    )
    _deepspeed_on_cpu(session)
    session.run("pytest", "tests-portability", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: style, import order, docstrings."""
    session.install("ruff>=0.17,<0.18")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over every distribution's sources."""
    session.install(TORCH, "mypy>=1.13", *_packages("fabric-core", "fabric-ddp", "fabric-fsdp"))
    # fabric-deepspeed type-checks without deepspeed installed (mypy treats it as untyped).
    session.install("--no-deps", *_packages("fabric-deepspeed"))
    session.run(
        "mypy",
        "packages/fabric-core/src",
        "packages/fabric-ddp/src",
        "packages/fabric-fsdp/src",
        "packages/fabric-deepspeed/src",
        # torch_xla is not installed here: its imports are untyped (ignore_missing_imports).
        "packages/fabric-xla/src",
        # What a user's own mypy sees of Fabric's return values.
        "packages/fabric-core/tests/typing_user_loop.py",
    )


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the user guide and API reference into build/site (warnings are errors)."""
    session.install(
        TORCH,
        "mkdocs>=1.6",
        "mkdocs-material>=9.5",
        "mkdocstrings[python]>=0.26",
        *_packages("fabric-core", "fabric-ddp"),
    )
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site")


@nox.session(python=PYTHON)
def example(session: nox.Session) -> None:
    """The main job: a character-level GPT on 2 CPU processes with FSDP, launched by `fabric run`.

    Extra arguments go to the script (e.g. ``nox -s example -- --steps 50``). The run's
    metrics, curves and checkpoint land in ``runs/char-gpt/fsdp/version_<N>``.
    """
    session.install(TORCH, *EXAMPLE_TOOLS, *_packages("fabric-core", "fabric-ddp", "fabric-fsdp"))
    launch = ("python", "-m", "fabric_core", "run", "--accelerator", "cpu", "--devices", "2")
    session.run(*launch, "--strategy", "fsdp", "examples/train_char_gpt.py", *session.posargs)


@nox.session(python=PYTHON)
def digits(session: nox.Session) -> None:
    """The one-minute example: a classifier on scikit-learn's bundled handwritten digits, on one CPU."""
    session.install(TORCH, "scikit-learn", *_packages("fabric-core"))
    session.run("python", "examples/train_digits.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmark harness (not part of the default run): fabric against hand-written PyTorch.

    Installs torch, every CPU-capable plugin (fabric-ddp, fabric-fsdp, fabric-deepspeed with
    deepspeed), matplotlib for the plots and uv for the plugin environments; then, best
    effort, Lightning Fabric and Hugging Face Accelerate with torch pinned (the harness
    compares them when they installed; FABRIC_BENCH_RIVALS=0 skips them). Arguments go to
    benchmarks/run_all.py, e.g. `nox -s bench -- --quick` or `nox -s bench -- --docs`.
    """
    session.install(
        TORCH, "uv", "matplotlib", *_packages("fabric-core", "fabric-ddp", "fabric-fsdp", "fabric-deepspeed")
    )
    if os.environ.get("FABRIC_BENCH_RIVALS", "1") != "0":
        try:
            session.install(TORCH, "lightning", "accelerate")
        except nox.command.CommandFailed:
            session.warn(
                "lightning and accelerate did not install: the harness compares fabric with torch only"
            )
    _deepspeed_on_cpu(session)
    session.run("python", "benchmarks/run_all.py", *session.posargs)
