"""Cluster environments: detection and its order, the override variable, and what each environment reads."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import fabric_core.environments.detect as detect_module
from fabric_core.environments import (
    ENVIRONMENT_REGISTRY,
    ClusterEnvironment,
    KubeflowEnvironment,
    LocalEnvironment,
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
    detect_environment,
    expand_hostlist,
    register_requeue_handler,
)
from fabric_core.environments._hostlist import iter_hostlist
from fabric_core.environments.slurm import parse_tasks_per_node
from fabric_core.registry import UnknownNameError

_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "PMIX_", "MPI_", "LSB_", "JSM_", "KUBERNETES_", "TORCHELASTIC_")
_NAMES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "FABRIC_CLUSTER_ENVIRONMENT",
)

TORCHELASTIC = {
    "TORCHELASTIC_RUN_ID": "abc",
    "RANK": "5",
    "GROUP_RANK": "1",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "4",
    "WORLD_SIZE": "8",
    "MASTER_ADDR": "10.0.0.1",
    "MASTER_PORT": "29400",
}
SLURM = {
    "SLURM_NTASKS": "8",
    "SLURM_JOB_NAME": "train.sh",
    "SLURM_JOB_ID": "1234567",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_NNODES": "2",
    "SLURM_TASKS_PER_NODE": "4(x2)",
    "SLURM_NODELIST": "gpu-[07-08]",
}
KUBEFLOW = {
    "KUBERNETES_PORT": "tcp://10.96.0.1:443",
    "MASTER_ADDR": "job-master-0",
    "MASTER_PORT": "23456",
    "WORLD_SIZE": "3",
    "RANK": "2",
}
LSF = {
    "LSB_JOBID": "98765",
    "LSB_DJOB_RANKFILE": "/nonexistent/rankfile",
    "JSM_NAMESPACE_LOCAL_RANK": "1",
    "JSM_NAMESPACE_SIZE": "4",
    "JSM_NAMESPACE_RANK": "3",
}
OPEN_MPI = {
    "OMPI_COMM_WORLD_SIZE": "8",
    "OMPI_COMM_WORLD_RANK": "5",
    "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
}
HYDRA = {"PMI_SIZE": "6", "PMI_RANK": "4", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "3"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every variable an environment reads, so the machine's own cannot leak in."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES) or name in _NAMES:
            monkeypatch.delenv(name)
    monkeypatch.setattr(detect_module, "_reported", set())


@pytest.fixture
def setenv(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def set_all(*mappings: dict[str, str], **extra: str) -> None:
        for mapping in (*mappings, extra):
            for name, value in mapping.items():
                monkeypatch.setenv(name, value)

    return set_all


# -- host lists --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("node1", ["node1"]),
        ("node[1-3]", ["node1", "node2", "node3"]),
        ("gpu-[01-04,07]", ["gpu-01", "gpu-02", "gpu-03", "gpu-04", "gpu-07"]),
        ("a[1-2],b3,c-[10-11]x", ["a1", "a2", "b3", "c-10x", "c-11x"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("n[007]", ["n007"]),
        ("n[3-3]", ["n3"]),
        ("n[1,3,5-6]", ["n1", "n3", "n5", "n6"]),
        ("r[1-2]n[08-09]", ["r1n08", "r1n09", "r2n08", "r2n09"]),
        ("n[1-2].cluster.org", ["n1.cluster.org", "n2.cluster.org"]),
        ("[1-2]node", ["1node", "2node"]),
        ("host.example.com,other", ["host.example.com", "other"]),
        ("  node[1-2] , x ", ["node1", "node2", "x"]),
        ("n[ 1-2 , 4 ]", ["n1", "n2", "n4"]),
        ("a[1-2],a[1-2]", ["a1", "a2", "a1", "a2"]),
    ],
)
def test_expand_hostlist(text: str, hosts: list[str]) -> None:
    assert expand_hostlist(text) == hosts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("node[1-3", "Unclosed"),
        ("node1-3]", "Unbalanced"),
        ("a[[1]]", "Nested"),
        ("n[3-1]", "backwards"),
        ("n[a-b]", "bracket entry"),
        ("n[]", "bracket entry"),
        ("n[1-]", "bracket entry"),
        ("n[1,,2]", "bracket entry"),
        ("a,,b", "empty entry"),
        ("a,", "empty entry"),
    ],
)
def test_expand_hostlist_rejects_malformed_lists(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand_hostlist(text)


def test_first_host_of_a_huge_range_is_found_without_expanding_it() -> None:
    start = time.perf_counter()
    assert next(iter_hostlist("n[0000000001-9999999999],m1")) == "n0000000001"
    assert time.perf_counter() - start < 1


# -- registration and detection ----------------------------------------------------------


def test_all_environments_are_registered_with_descriptions_and_distinct_priorities() -> None:
    names = ["torchelastic", "kubeflow", "lsf", "mpi", "slurm", "local"]
    assert set(names) <= set(ENVIRONMENT_REGISTRY.available())
    for entry in ENVIRONMENT_REGISTRY.entries():
        if entry.name in names:
            assert entry.description
            assert entry.target_path.startswith("fabric_core.environments.")
    priorities = [ENVIRONMENT_REGISTRY.get_class(name).detection_priority for name in names]
    assert priorities == [10, 20, 30, 40, 50, 1000]


def test_nothing_set_detects_the_local_environment(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fabric_core"):
        assert isinstance(detect_environment(), LocalEnvironment)
    assert "no cluster environment recognised this process" in caplog.text
    assert "torchelastic, kubeflow, lsf, mpi, slurm" in caplog.text


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (TORCHELASTIC, TorchElasticEnvironment),
        (SLURM, SLURMEnvironment),
        (KUBEFLOW, KubeflowEnvironment),
        (LSF, LSFEnvironment),
        (OPEN_MPI, MPIEnvironment),
        (HYDRA, MPIEnvironment),
        ({"PMI_SIZE": "2", "PMI_RANK": "1"}, MPIEnvironment),
    ],
    ids=["torchelastic", "slurm", "kubeflow", "lsf", "open-mpi", "mpich-hydra", "pmi-only"],
)
def test_each_environment_is_detected(
    setenv: Callable[..., None], variables: dict[str, str], expected: type[ClusterEnvironment]
) -> None:
    setenv(variables)
    assert expected.detect()
    environment = detect_environment()
    assert type(environment) is expected
    assert environment.creates_processes_externally


def test_detection_reason_is_logged_once(
    setenv: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    setenv(SLURM)
    with caplog.at_level(logging.INFO, logger="fabric_core"):
        detect_environment()
        detect_environment()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "Cluster environment: slurm" in messages[0]
    assert "SLURMEnvironment.detect() recognised this process (detection priority 50" in messages[0]
    assert "not recognised before it: torchelastic, kubeflow, lsf, mpi" in messages[0]


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        # torchrun inside srun: the agent spawns the workers, so its variables describe them.
        ((SLURM, TORCHELASTIC), TorchElasticEnvironment),
        # torchrun inside a PyTorchJob pod (nprocPerNode).
        ((KUBEFLOW, TORCHELASTIC), TorchElasticEnvironment),
        # torchrun under mpirun (one agent per node).
        ((OPEN_MPI, TORCHELASTIC), TorchElasticEnvironment),
        # mpirun inside an sbatch allocation inherits the batch step's SLURM variables.
        ((SLURM, OPEN_MPI), MPIEnvironment),
        # MPICH's hydra inside an allocation exports its local sizes.
        ((SLURM, HYDRA), MPIEnvironment),
        # srun --mpi=pmi2 exports PMI_SIZE/PMI_RANK but no local size: SLURM knows more.
        ((SLURM, {"PMI_SIZE": "8", "PMI_RANK": "5"}), SLURMEnvironment),
        # jsrun tasks (Spectrum MPI) also carry Open MPI's variables.
        ((OPEN_MPI, LSF), LSFEnvironment),
    ],
    ids=[
        "srun+torchrun",
        "kubeflow+torchrun",
        "mpirun+torchrun",
        "sbatch+mpirun",
        "sbatch+hydra",
        "srun-pmi2",
        "jsrun",
    ],
)
def test_detection_precedence(
    setenv: Callable[..., None], layers: tuple[dict[str, str], ...], expected: type[ClusterEnvironment]
) -> None:
    setenv(*layers)
    assert type(detect_environment()) is expected


@pytest.mark.parametrize("job_name", ["bash", "interactive"])
def test_interactive_slurm_allocation_is_not_slurm(setenv: Callable[..., None], job_name: str) -> None:
    setenv(SLURM, SLURM_JOB_NAME=job_name)
    assert not SLURMEnvironment.detect()
    assert isinstance(detect_environment(), LocalEnvironment)


def test_slurm_needs_ntasks(setenv: Callable[..., None]) -> None:
    setenv({name: value for name, value in SLURM.items() if name != "SLURM_NTASKS"})
    assert not SLURMEnvironment.detect()


def test_kubeflow_needs_every_variable(setenv: Callable[..., None]) -> None:
    for missing in KUBEFLOW:
        setenv({name: value for name, value in KUBEFLOW.items() if name != missing})
        os.environ.pop(missing, None)
        assert not KubeflowEnvironment.detect(), missing


def test_kubeflow_is_not_detected_under_torchelastic(setenv: Callable[..., None]) -> None:
    setenv(KUBEFLOW, TORCHELASTIC_RUN_ID="x")
    assert not KubeflowEnvironment.detect()


def test_lsf_detection_reads_no_file(setenv: Callable[..., None]) -> None:
    setenv(LSF)  # the rank file does not exist: detect() must not open it
    assert LSFEnvironment.detect()
    for missing in ("LSB_JOBID", "LSB_DJOB_RANKFILE", "JSM_NAMESPACE_LOCAL_RANK", "JSM_NAMESPACE_SIZE"):
        value = os.environ.pop(missing)
        assert not LSFEnvironment.detect(), missing
        os.environ[missing] = value


# -- the override variable ---------------------------------------------------------------


def test_override_forces_a_named_environment(
    setenv: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    setenv(FABRIC_CLUSTER_ENVIRONMENT="slurm")
    with caplog.at_level(logging.INFO, logger="fabric_core"):
        assert isinstance(detect_environment(), SLURMEnvironment)
    assert "forced by FABRIC_CLUSTER_ENVIRONMENT=slurm" in caplog.text
    assert "SLURMEnvironment.detect() does not recognise this process" in caplog.text


def test_override_beats_detection_and_ignores_case(setenv: Callable[..., None]) -> None:
    setenv(TORCHELASTIC, SLURM, FABRIC_CLUSTER_ENVIRONMENT="SLURM")
    assert isinstance(detect_environment(), SLURMEnvironment)


@pytest.mark.parametrize("value", ["none", "None", " NONE "])
def test_override_none_forces_local(
    setenv: Callable[..., None], caplog: pytest.LogCaptureFixture, value: str
) -> None:
    setenv(TORCHELASTIC, FABRIC_CLUSTER_ENVIRONMENT=value)
    with caplog.at_level(logging.INFO, logger="fabric_core"):
        assert isinstance(detect_environment(), LocalEnvironment)
    assert "Cluster environment: local (forced by FABRIC_CLUSTER_ENVIRONMENT=" in caplog.text


def test_override_with_unknown_name_lists_the_names(setenv: Callable[..., None]) -> None:
    setenv(FABRIC_CLUSTER_ENVIRONMENT="slrum")
    with pytest.raises(UnknownNameError) as raised:
        detect_environment()
    message = str(raised.value)
    assert "FABRIC_CLUSTER_ENVIRONMENT='slrum'" in message
    for name in ("torchelastic", "kubeflow", "lsf", "mpi", "slurm", "local"):
        assert name in message
    assert "Did you mean 'slurm'?" in message
    assert "'none'" in message


def test_processes_per_node_defaults_to_none() -> None:
    assert LocalEnvironment().processes_per_node() is None


def test_torchelastic_processes_per_node(setenv: Callable[..., None]) -> None:
    setenv(TORCHELASTIC)
    assert TorchElasticEnvironment().processes_per_node() == 4


# -- SLURM -------------------------------------------------------------------------------


def test_slurm_ranks_sizes_address_and_port(setenv: Callable[..., None]) -> None:
    setenv(SLURM)
    env = SLURMEnvironment()
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (8, 5, 1, 1)
    assert env.main_address == "gpu-07"
    assert env.main_port == 10000 + 4567
    assert env.processes_per_node() == 4
    assert env.num_nodes() == 2
    env.validate_settings(num_devices=4, num_nodes=2)
    env.set_world_size(99)  # ignored: SLURM knows
    env.set_global_rank(99)
    assert (env.world_size(), env.global_rank()) == (8, 5)


def test_slurm_master_variables_win(setenv: Callable[..., None]) -> None:
    setenv(SLURM, MASTER_ADDR="10.1.2.3", MASTER_PORT="40000")
    assert SLURMEnvironment().main_address == "10.1.2.3"
    assert SLURMEnvironment().main_port == 40000


def test_slurm_step_nodelist_comes_first(setenv: Callable[..., None]) -> None:
    setenv(SLURM, SLURM_STEP_NODELIST="b[3-4]", SLURM_JOB_NODELIST="c1")
    assert SLURMEnvironment().main_address == "b3"
    os.environ.pop("SLURM_STEP_NODELIST")
    os.environ.pop("SLURM_NODELIST")
    assert SLURMEnvironment().main_address == "c1"


def test_slurm_port_from_a_short_job_id(setenv: Callable[..., None]) -> None:
    setenv(SLURM, SLURM_JOB_ID="42")
    assert SLURMEnvironment().main_port == 10042


def test_slurm_port_without_job_id_asks_for_master_port(setenv: Callable[..., None]) -> None:
    setenv(SLURM)
    os.environ.pop("SLURM_JOB_ID")
    with pytest.raises(ValueError, match="Export MASTER_PORT"):
        SLURMEnvironment().main_port  # noqa: B018


def test_slurm_address_errors(setenv: Callable[..., None]) -> None:
    setenv(SLURM, SLURM_NODELIST="gpu-[07-08")
    with pytest.raises(ValueError, match=r"SLURM_NODELIST could not be read: .*Export MASTER_ADDR"):
        SLURMEnvironment().main_address  # noqa: B018
    os.environ.pop("SLURM_NODELIST")
    with pytest.raises(ValueError, match="neither MASTER_ADDR nor SLURM_NODELIST"):
        SLURMEnvironment().main_address  # noqa: B018


def test_slurm_rank_outside_srun_says_to_use_srun(setenv: Callable[..., None]) -> None:
    setenv(SLURM, SLURM_PROCID="")
    with pytest.raises(ValueError, match=r"SLURM_PROCID is not set.*srun python train.py"):
        SLURMEnvironment().global_rank()
    setenv(SLURM_PROCID="x")
    with pytest.raises(ValueError, match="SLURM_PROCID='x' must be an integer"):
        SLURMEnvironment().global_rank()


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"SLURM_NTASKS_PER_NODE": "2"}, 2),
        ({"SLURM_TASKS_PER_NODE": "2(x3)"}, 2),
        ({"SLURM_STEP_TASKS_PER_NODE": "3(x2)", "SLURM_TASKS_PER_NODE": "4(x2)"}, 3),
        ({"SLURM_TASKS_PER_NODE": "2(x2),1", "SLURM_NODEID": "2"}, 1),
        ({"SLURM_TASKS_PER_NODE": "2(x2),1", "SLURM_NODEID": "0"}, 2),
        ({"SLURM_TASKS_PER_NODE": "2(x2),1", "SLURM_NODEID": "9"}, None),
        ({"SLURM_NTASKS": "8", "SLURM_NNODES": "2"}, 4),
        ({"SLURM_NTASKS": "7", "SLURM_NNODES": "2"}, None),
        ({"SLURM_NTASKS": "7"}, None),
    ],
)
def test_slurm_processes_per_node(
    setenv: Callable[..., None], variables: dict[str, str], expected: int | None
) -> None:
    setenv({"SLURM_NTASKS": "6", "SLURM_JOB_NAME": "job"}, variables)
    assert SLURMEnvironment().processes_per_node() == expected


@pytest.mark.parametrize(
    ("text", "counts"),
    [("4", [4]), ("2(x3)", [2, 2, 2]), ("2(x2),1", [2, 2, 1]), ("1,3(x2)", [1, 3, 3])],
)
def test_parse_tasks_per_node(text: str, counts: list[int]) -> None:
    assert parse_tasks_per_node(text) == counts


@pytest.mark.parametrize("text", ["", "x", "2(x", "2(x3", "2(3)", "2(xa)"])
def test_parse_tasks_per_node_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match=r"SLURM_TASKS_PER_NODE=.* is malformed"):
        parse_tasks_per_node(text)


@pytest.mark.parametrize(
    ("devices", "nodes", "message"),
    [
        (2, 2, r"SLURM started 4 task\(s\) per node .* Fabric\(devices=2\).* set devices=4"),
        (4, 1, r"SLURM_NNODES=2.*Fabric\(num_nodes=1\).*Set num_nodes=2"),
    ],
)
def test_slurm_validate_settings(setenv: Callable[..., None], devices: int, nodes: int, message: str) -> None:
    setenv(SLURM)
    with pytest.raises(ValueError, match=message):
        SLURMEnvironment().validate_settings(devices, nodes)


def test_slurm_validate_total_tasks(setenv: Callable[..., None]) -> None:
    setenv(SLURM_NTASKS="3", SLURM_JOB_NAME="job")
    with pytest.raises(ValueError, match=r"SLURM_NTASKS=3.*implies 2.*srun"):
        SLURMEnvironment().validate_settings(2, 1)


def test_slurm_validate_uneven_tasks(setenv: Callable[..., None]) -> None:
    setenv(SLURM, SLURM_NTASKS="5", SLURM_NNODES="3", SLURM_TASKS_PER_NODE="2(x2),1")
    with pytest.raises(ValueError, match=r"uneven number of tasks per node \(2,2,1\).*--ntasks-per-node"):
        SLURMEnvironment().validate_settings(2, 3)


# -- SLURM requeue on SIGUSR1 ------------------------------------------------------------


@pytest.fixture
def restore_sigusr1() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, previous)


@pytest.fixture
def fake_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[int], Path]:
    """Put a fake ``scontrol`` first on PATH; it appends its arguments to the returned file."""

    def make(exit_code: int = 0) -> Path:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        record = tmp_path / "scontrol-calls.txt"
        script = bin_dir / "scontrol"
        script.write_text(
            f'#!/bin/sh\necho "$@" >> "{record}"\necho "scontrol failed on purpose" >&2\nexit {exit_code}\n'
            if exit_code
            else f'#!/bin/sh\necho "$@" >> "{record}"\n'
        )
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        return record

    return make


def _raise_signal_and_wait(calls: list[str]) -> None:
    os.kill(os.getpid(), signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.usefixtures("restore_sigusr1")
def test_requeue_on_sigusr1_saves_then_requeues_from_rank_0(
    setenv: Callable[..., None], fake_scontrol: Callable[[int], Path]
) -> None:
    record = fake_scontrol(0)
    setenv(SLURM, SLURM_PROCID="0", SLURM_JOB_ID="777")
    calls: list[str] = []
    sentinel = signal.getsignal(signal.SIGUSR1)

    def save() -> None:
        assert not record.exists(), "the callback must run before the requeue"
        calls.append("save")

    previous = register_requeue_handler(save)
    assert previous == sentinel
    _raise_signal_and_wait(calls)
    assert calls == ["save"]
    assert record.read_text() == "requeue 777\n"


@pytest.mark.usefixtures("restore_sigusr1")
def test_requeue_handler_on_other_ranks_only_calls_back(
    setenv: Callable[..., None], fake_scontrol: Callable[[int], Path]
) -> None:
    record = fake_scontrol(0)
    setenv(SLURM, SLURM_PROCID="3")
    calls: list[str] = []
    register_requeue_handler(lambda: calls.append("save"))
    _raise_signal_and_wait(calls)
    assert calls == ["save"]
    assert not record.exists()


@pytest.mark.usefixtures("restore_sigusr1")
def test_requeue_of_an_array_task_without_callback(
    setenv: Callable[..., None], fake_scontrol: Callable[[int], Path], caplog: pytest.LogCaptureFixture
) -> None:
    record = fake_scontrol(0)
    setenv(SLURM, SLURM_PROCID="0", SLURM_JOB_ID="101", SLURM_ARRAY_JOB_ID="100", SLURM_ARRAY_TASK_ID="3")
    register_requeue_handler()
    with caplog.at_level(logging.INFO, logger="fabric_core"):
        os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert record.read_text() == "requeue 100_3\n"
    assert "Requeued SLURM job 100_3" in caplog.text


@pytest.mark.usefixtures("restore_sigusr1")
def test_requeue_happens_even_when_the_callback_fails(
    setenv: Callable[..., None], fake_scontrol: Callable[[int], Path]
) -> None:
    record = fake_scontrol(0)
    setenv(SLURM, SLURM_PROCID="0", SLURM_JOB_ID="55")

    def broken() -> None:
        raise OSError("disk full")

    register_requeue_handler(broken)
    with pytest.raises(OSError, match="disk full"):
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(5)  # the handler raises into this frame long before the sleep ends
    assert record.read_text() == "requeue 55\n"


@pytest.mark.usefixtures("restore_sigusr1")
def test_requeue_without_scontrol_logs_an_error(
    setenv: Callable[..., None], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setenv(SLURM, SLURM_PROCID="0", PATH=str(tmp_path))
    calls: list[str] = []
    register_requeue_handler(lambda: calls.append("save"))
    with caplog.at_level(logging.ERROR, logger="fabric_core"):
        _raise_signal_and_wait(calls)
    assert calls == ["save"]
    assert "'scontrol' command was not found on PATH" in caplog.text


@pytest.mark.usefixtures("restore_sigusr1")
def test_requeue_failure_is_logged(
    setenv: Callable[..., None], fake_scontrol: Callable[[int], Path], caplog: pytest.LogCaptureFixture
) -> None:
    record = fake_scontrol(1)
    setenv(SLURM, SLURM_PROCID="0", SLURM_JOB_ID="9")
    calls: list[str] = []
    register_requeue_handler(lambda: calls.append("save"), signal_number=signal.SIGUSR1)
    with caplog.at_level(logging.ERROR, logger="fabric_core"):
        _raise_signal_and_wait(calls)
    assert record.read_text() == "requeue 9\n"
    assert "exit code 1: scontrol failed on purpose" in caplog.text


# -- Kubeflow ----------------------------------------------------------------------------


def test_kubeflow_ranks_sizes_address_and_port(setenv: Callable[..., None]) -> None:
    setenv(KUBEFLOW)
    env = KubeflowEnvironment()
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (3, 2, 0, 2)
    assert (env.main_address, env.main_port) == ("job-master-0", 23456)
    assert env.processes_per_node() == 1
    env.validate_settings(num_devices=1, num_nodes=3)


def test_kubeflow_validate_settings(setenv: Callable[..., None]) -> None:
    setenv(KUBEFLOW)
    with pytest.raises(ValueError, match=r"one process per pod.*devices=2.*torchrun --nproc-per-node=2"):
        KubeflowEnvironment().validate_settings(2, 3)
    with pytest.raises(ValueError, match=r"3 pod\(s\) \(WORLD_SIZE=3\).*num_nodes=1.*Set num_nodes=3"):
        KubeflowEnvironment().validate_settings(1, 1)


# -- LSF ---------------------------------------------------------------------------------


@pytest.fixture
def rankfile(tmp_path: Path, setenv: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "rankfile"
    path.write_text("batch1\nh1\nh1\n\nh2.cluster.org\nh2.cluster.org\n")
    setenv(LSF, LSB_DJOB_RANKFILE=str(path))
    monkeypatch.setattr(socket, "gethostname", lambda: "h2")
    return path


@pytest.mark.usefixtures("rankfile")
def test_lsf_ranks_sizes_address_and_port() -> None:
    env = LSFEnvironment()
    assert env.hosts() == ["h1", "h2.cluster.org"]
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (4, 3, 1, 1)
    assert env.main_address == "h1"
    assert env.main_port == 10000 + 8765
    assert env.processes_per_node() == 2
    env.validate_settings(num_devices=2, num_nodes=2)


def test_lsf_master_port_and_local_size(rankfile: Path, setenv: Callable[..., None]) -> None:
    setenv(MASTER_PORT="31000", JSM_NAMESPACE_LOCAL_SIZE="3")
    assert LSFEnvironment().main_port == 31000
    assert LSFEnvironment().processes_per_node() == 3


def test_lsf_single_line_rankfile_is_the_only_host(rankfile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rankfile.write_text("h9\n")
    monkeypatch.setattr(socket, "gethostname", lambda: "h9.domain")
    env = LSFEnvironment()
    assert (env.main_address, env.node_rank()) == ("h9", 0)


def test_lsf_errors(rankfile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "elsewhere")
    with pytest.raises(ValueError, match=r"'elsewhere' is not among the hosts of LSB_DJOB_RANKFILE \(h1, h2"):
        LSFEnvironment().node_rank()
    with pytest.raises(ValueError, match=r"2 compute host\(s\).*num_nodes=1.*Set num_nodes=2"):
        LSFEnvironment().validate_settings(4, 1)
    with pytest.raises(ValueError, match=r"JSM_NAMESPACE_SIZE=4.*implies 6"):
        LSFEnvironment().validate_settings(3, 2)
    rankfile.write_text("\n\n")
    with pytest.raises(ValueError, match="lists no host"):
        LSFEnvironment().hosts()
    rankfile.unlink()
    with pytest.raises(ValueError, match="Cannot read the LSF rank file"):
        LSFEnvironment().main_address  # noqa: B018


# -- MPI ---------------------------------------------------------------------------------


def test_open_mpi_ranks_sizes_and_address(setenv: Callable[..., None]) -> None:
    setenv(OPEN_MPI, MASTER_ADDR="node0")
    env = MPIEnvironment()
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (8, 5, 1, 1)
    assert env.processes_per_node() == 4
    assert (env.main_address, env.main_port) == ("node0", 29500)
    env.validate_settings(num_devices=4, num_nodes=2)


def test_mpich_ranks_sizes_and_port(setenv: Callable[..., None]) -> None:
    setenv(HYDRA, MASTER_ADDR="node0", MASTER_PORT="1234")
    env = MPIEnvironment()
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (6, 4, 1, 1)
    assert (env.processes_per_node(), env.main_port) == (3, 1234)


def test_mpi_without_local_information(setenv: Callable[..., None]) -> None:
    setenv(PMI_SIZE="4", PMI_RANK="3")
    env = MPIEnvironment()
    assert (env.local_rank(), env.node_rank(), env.processes_per_node()) == (0, 3, None)
    with pytest.raises(ValueError, match="does not say whether the 4 ranks share this machine"):
        env.main_address  # noqa: B018


def test_mpi_address_defaults_to_loopback_when_all_ranks_are_local(setenv: Callable[..., None]) -> None:
    setenv(OPEN_MPI, OMPI_COMM_WORLD_SIZE="4")
    assert MPIEnvironment().main_address == "127.0.0.1"
    setenv(OMPI_COMM_WORLD_SIZE="1", OMPI_COMM_WORLD_RANK="0", OMPI_COMM_WORLD_LOCAL_SIZE="")
    assert MPIEnvironment().main_address == "127.0.0.1"


def test_mpi_multi_node_without_master_addr_says_how_to_export_it(setenv: Callable[..., None]) -> None:
    setenv(OPEN_MPI)
    with pytest.raises(
        ValueError,
        match=r"MASTER_ADDR is not set, but the 8 ranks span several machines \(4 on this one\).*-x MASTER_ADDR",
    ):
        MPIEnvironment().main_address  # noqa: B018


def test_mpi_validate_settings(setenv: Callable[..., None]) -> None:
    setenv(OPEN_MPI)
    with pytest.raises(ValueError, match=r"OMPI_COMM_WORLD_LOCAL_SIZE=4.*devices=2.*Set devices=4"):
        MPIEnvironment().validate_settings(2, 4)
    with pytest.raises(ValueError, match=r"OMPI_COMM_WORLD_SIZE=8.*implies 12"):
        MPIEnvironment().validate_settings(4, 3)
    os.environ.pop("OMPI_COMM_WORLD_LOCAL_SIZE")
    with pytest.raises(ValueError, match=r"mpirun -np 4"):
        MPIEnvironment().validate_settings(2, 2)


def test_mpi_rank_missing(setenv: Callable[..., None]) -> None:
    setenv(OMPI_COMM_WORLD_SIZE="2")
    with pytest.raises(ValueError, match="None of OMPI_COMM_WORLD_RANK, PMI_RANK is set"):
        MPIEnvironment().global_rank()
