"""A real single-node SLURM in a temporary folder, from Debian's slurmctld, slurmd and munge.

Everything lives under the folder: the munge key and socket, slurm.conf and gres.conf, the
state and spool folders, the logs. The daemons run in the foreground as children of the test
process (root, no systemd) on free loopback ports, and are stopped by their process ids. The
node has two fake GPUs (`gres.conf`: File=/dev/null and /dev/zero), so that a job's GPU request
is recorded without a GPU, and two GPU jobs run at once, as two jobs do under `--cores 2`.
There is no slurmdbd: `sacct` has nothing, job states come from `squeue`, and MinJobAge keeps
a finished job in slurmctld's memory for `scontrol show job`.

SLURM's commands find the configuration through SLURM_CONF, but the executor plugin's job step
drops every SLURM_* variable before it calls `srun` inside a job, and srun then looks only at
the compiled-in path: so /etc/slurm/slurm.conf links to this cluster's file while it runs. A
machine that has its own /etc/slurm/slurm.conf is left alone (`Cluster.start` refuses); a link
that a killed test run left behind (to a test cluster's file whose slurmctld is gone) is replaced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

# Snakemake's SLURM executor plugin, kept out of the venv (make slurm-plugin): imported from
# PYTHONPATH by Snakemake, and by the job step inside each job (sbatch exports the environment).
PLUGIN = Path(__file__).resolve().parents[1] / ".slurm-plugin"
DAEMONS = ("munged", "slurmctld", "slurmd")
PARTITION = "unetflow"
NODE = "node1"
MIN_JOB_AGE_S = 600  # finished jobs stay visible to squeue and scontrol for the whole test
START_TIMEOUT_S = 60
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")  # where srun looks without SLURM_CONF

SLURM_CONF = """\
# unetflow test cluster
ClusterName=unetflow
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=verbose
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge={min_job_age}
KillWait=5
GresTypes=gpu
NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} \
Gres=gpu:2 State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
MARKER = SLURM_CONF.splitlines(keepends=True)[0]  # how a test cluster's file is recognised
GRES_CONF = "Name=gpu File=/dev/null\nName=gpu File=/dev/zero\n"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def binary(name: str) -> str | None:
    """The path of a SLURM or munge program; the daemons live in sbin, which a user's PATH
    may lack."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def missing_binaries() -> list[str]:
    """SLURM and munge programs this machine lacks."""
    return [
        name
        for name in (*DAEMONS, "sbatch", "squeue", "sinfo", "scontrol", "scancel")
        if binary(name) is None
    ]


class Cluster:
    """munged, slurmctld and slurmd under `root`; `env` points SLURM's commands at it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.linked = False
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}

    @property
    def log(self) -> Path:
        return self.root / "log" / "slurmctld.log"

    def _write_config(self) -> None:
        for sub in ("munge", "state", "spool", "run", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        values = {
            "host": socket.gethostname().split(".")[0],
            "ctld_port": free_port(),
            "slurmd_port": free_port(),
            "root": self.root,
            "node": NODE,
            "partition": PARTITION,
            "cpus": os.cpu_count() or 1,
            "memory": 4000,
            "min_job_age": MIN_JOB_AGE_S,
        }
        (self.root / "slurm.conf").write_text(SLURM_CONF.format(**values))
        (self.root / "gres.conf").write_text(GRES_CONF)
        link_conf(SYSTEM_CONF, self.root / "slurm.conf")
        self.linked = True

    def _start(self, name: str, cmd: list[str]) -> None:
        log = (self.root / "log" / f"{name}.out").open("w")
        self.procs[name] = subprocess.Popen(
            [binary(cmd[0]) or cmd[0], *cmd[1:]],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self) -> Cluster:
        """Write the configuration, start the three daemons, wait for an idle node."""
        self._write_config()
        munge = self.root / "munge"
        self._start(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--key-file={munge / 'munge.key'}",
                f"--socket={munge / 'munge.socket'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
        )
        self._wait(lambda: (munge / "munge.socket").exists(), "munged's socket")
        self._start("slurmctld", ["slurmctld", "-D", "-c", "-i"])
        self._start("slurmd", ["slurmd", "-D", "-N", NODE])
        self._wait(self.node_idle, "an idle node in sinfo")
        return self

    def node_idle(self) -> bool:
        out = self.command(["sinfo", "-h", "-N", "-o", "%T"], check=False)
        return out.strip() == "idle"

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                logs = "\n".join(
                    f"--- {p.name}\n{p.read_text()[-2000:]}"
                    for p in sorted((self.root / "log").glob("*"))
                )
                raise RuntimeError(f"no {what} (exited: {dead})\n{logs}")
            time.sleep(0.2)

    def command(self, cmd: list[str], check: bool = True) -> str:
        """Run a SLURM client command against this cluster; its stdout."""
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def steps(self) -> list[psutil.Process]:
        """The job step daemons (slurmstepd) of this cluster: slurmd's children that detached."""
        return processes_of(Path(self.env["SLURM_CONF"]), ("slurmstepd",))

    def stop(self) -> None:
        """Cancel every job, stop the daemons by process id (slurmd first), then any job step
        left; SIGKILL what will not go."""
        if "slurmctld" in self.procs:
            self.command(["scancel", f"--partition={PARTITION}"], check=False)
            deadline = time.monotonic() + 30
            while self.command(["squeue", "-h"], check=False).strip():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        for name in reversed(DAEMONS):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
        for step in self.steps():
            with contextlib.suppress(psutil.Error):
                step.kill()
        if self.linked:
            SYSTEM_CONF.unlink(missing_ok=True)
            self.linked = False


def link_conf(link: Path, conf: Path) -> None:
    """Point `link` at `conf`; replace a stale link of a killed test run, refuse anything else."""
    if link.is_symlink() and stale(Path(os.readlink(link))):
        link.unlink()
    if link.exists() or link.is_symlink():
        raise FileExistsError(f"{link} exists: this machine has a SLURM of its own")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(conf)


def stale(conf: Path) -> bool:
    """Whether `conf` is gone, or is a test cluster's slurm.conf that no live daemon uses."""
    if not conf.exists():
        return True
    with conf.open() as lines:
        if lines.readline() != MARKER:
            return False
    return not processes_of(conf, DAEMONS)


def processes_of(conf: Path, names: tuple[str, ...]) -> list[psutil.Process]:
    """The live processes called one of `names` that run with SLURM_CONF=`conf`."""
    found = []
    for proc in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if (
                proc.info["name"] in names
                and proc.status() != psutil.STATUS_ZOMBIE
                and proc.environ().get("SLURM_CONF") == str(conf)
            ):
                found.append(proc)
    return found


def unavailable(reason: str) -> None:
    """Skip with `reason`, or fail under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the SLURM tests cannot run: {reason}")
    pytest.skip(reason)
