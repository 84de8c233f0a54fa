"""The single-node SLURM cluster of the SLURM tests, up once per session (tests/slurm_cluster.py).

Where SLURM is not installed, the machine has a SLURM of its own, or the executor plugin is not
beside the venv (`make slurm-plugin`), the tests are skipped with the reason; under CI=true they
fail instead, so that CI cannot pass without running them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from slurm_cluster import PLUGIN, Cluster, missing_binaries, unavailable


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> Iterator[Cluster]:
    """munged, slurmctld and slurmd on loopback, stopped by process id after the session."""
    missing = missing_binaries()
    if missing:
        unavailable(
            f"SLURM is not installed ({', '.join(missing)} missing): "
            "apt-get install slurmctld slurmd slurm-client munge"
        )
    if os.geteuid() != 0:
        unavailable("the test cluster runs slurmd as root")
    if not (PLUGIN / "snakemake_executor_plugin_slurm").is_dir():
        unavailable(f"no executor plugin in {PLUGIN}: make slurm-plugin")
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except FileExistsError as error:
        unavailable(str(error))
    yield cluster
    daemons = list(cluster.procs.values())
    cluster.stop()
    left = [proc.args[0] for proc in daemons if proc.poll() is None] + cluster.steps()
    assert not left, f"SLURM processes left running: {left}"
