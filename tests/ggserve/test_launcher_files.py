"""What the launcher leaves on disk: a private config file, and on exit only what it created."""

from __future__ import annotations

import os
import stat

import pytest

from ggserve.config import ServeConfig, load_config
from ggserve.launcher import Launcher, _local_host


def test_config_is_private_and_a_given_run_dir_keeps_what_ggserve_did_not_create(tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "mine.txt").write_text("the user's")
    launcher = Launcher(ServeConfig(model="m.gguf", run_dir=str(run_dir), api_keys=["secret"]))
    mode = stat.S_IMODE(os.stat(launcher.config_path).st_mode)
    assert mode == 0o600 and load_config(launcher.config_path).api_keys == ["secret"]
    launcher.shutdown()
    assert sorted(os.listdir(run_dir)) == ["mine.txt"]


def test_metrics_files_of_the_http_workers_start_empty_and_are_removed(tmp_path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "metrics").mkdir(parents=True)
    (run_dir / "metrics" / "histogram_1.db").write_bytes(b"a previous run's counts")
    launcher = Launcher(ServeConfig(model="m.gguf", run_dir=str(run_dir), metrics=True))
    metrics_dir = launcher.frontend.env["PROMETHEUS_MULTIPROC_DIR"]
    assert metrics_dir == str(run_dir / "metrics") and os.listdir(metrics_dir) == []
    launcher.shutdown()
    assert os.listdir(run_dir) == []
    without = Launcher(ServeConfig(model="m.gguf", run_dir=str(run_dir)))
    assert "PROMETHEUS_MULTIPROC_DIR" not in without.frontend.env
    without.shutdown()


def test_a_run_dir_ggserve_created_is_removed(tmp_path) -> None:
    for given in ("", str(tmp_path / "new")):
        launcher = Launcher(ServeConfig(model="m.gguf", run_dir=given))
        run_dir = launcher.cfg.run_dir
        assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
        launcher.shutdown()
        assert not os.path.exists(run_dir)


def test_tcp_endpoints_get_curve_keys_and_ipc_ones_do_not(tmp_path) -> None:
    local = Launcher(ServeConfig(model="m.gguf", run_dir=str(tmp_path / "a")))
    remote = Launcher(ServeConfig(model="m.gguf", run_dir=str(tmp_path / "b"), executor_endpoint="tcp://127.0.0.1:0"))
    try:
        assert local.cfg.curve is None
        keys = remote.cfg.curve
        assert keys is not None and len({keys.server_secret, keys.client_secret}) == 2
        assert load_config(remote.config_path).curve == keys
    finally:
        local.shutdown()
        remote.shutdown()


@pytest.mark.parametrize(("host", "url_host"), [
    ("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("localhost", "localhost"),
])
def test_health_checks_reach_the_bound_address(host: str, url_host: str) -> None:
    assert _local_host(host) == url_host
