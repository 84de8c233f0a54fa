"""The link from /etc/slurm/slurm.conf to the test cluster, tried on a link in a temporary folder:
a killed test run's link is replaced, a machine's own SLURM configuration is never touched."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from slurm_cluster import MARKER, link_conf


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """A test cluster's slurm.conf, as Cluster writes it."""
    path = tmp_path / "old" / "slurm.conf"
    path.parent.mkdir()
    path.write_text(MARKER + "ClusterName=unetflow\n")
    return path


@pytest.fixture
def live_daemon(conf: Path, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A process named slurmctld running with SLURM_CONF=`conf` (a copy of sleep)."""
    fake = tmp_path / "slurmctld"
    shutil.copy(shutil.which("sleep"), fake)
    proc = subprocess.Popen([str(fake), "60"], env={"SLURM_CONF": str(conf)})
    yield proc
    proc.kill()
    proc.wait()


def test_a_free_link_points_at_the_new_cluster(tmp_path: Path) -> None:
    link, new = tmp_path / "etc" / "slurm.conf", tmp_path / "new.conf"
    link_conf(link, new)
    assert link.is_symlink() and link.readlink() == new


def test_a_link_to_a_dead_test_cluster_is_replaced(tmp_path: Path, conf: Path) -> None:
    link, new = tmp_path / "slurm.conf", tmp_path / "new.conf"
    link.symlink_to(conf)
    link_conf(link, new)
    assert link.readlink() == new


def test_a_link_to_a_removed_folder_is_replaced(tmp_path: Path) -> None:
    link, new = tmp_path / "slurm.conf", tmp_path / "new.conf"
    link.symlink_to(tmp_path / "gone" / "slurm.conf")
    link_conf(link, new)
    assert link.readlink() == new


def test_a_link_to_a_running_test_cluster_is_refused(
    tmp_path: Path, conf: Path, live_daemon: subprocess.Popen
) -> None:
    link = tmp_path / "slurm.conf"
    link.symlink_to(conf)
    with pytest.raises(FileExistsError, match="SLURM of its own"):
        link_conf(link, tmp_path / "new.conf")
    assert link.readlink() == conf


def test_a_machines_own_configuration_is_never_touched(tmp_path: Path) -> None:
    own = tmp_path / "site.conf"
    own.write_text("ClusterName=site\n")
    link = tmp_path / "slurm.conf"
    link.symlink_to(own)
    real = tmp_path / "real" / "slurm.conf"
    real.parent.mkdir()
    real.write_text("ClusterName=site\n")
    for existing in (link, real):
        with pytest.raises(FileExistsError, match=str(existing)):
            link_conf(existing, tmp_path / "new.conf")
    assert link.readlink() == own and real.read_text() == "ClusterName=site\n"
