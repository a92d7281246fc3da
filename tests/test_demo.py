"""`make demo`'s job (`raysight demo`): exit 0 and the accuracies it prints."""
import re

import pytest

from tests.conftest import free_port, run_cli


@pytest.mark.slow
def test_demo_trains_serves_and_says_what_it_promises(ray_cluster, tmp_path):
    proc = run_cli("demo", "--workdir", str(tmp_path / "demo"), "--port", str(free_port()), timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, (out + proc.stderr)[-4000:]
    validation = float(re.search(r"'validation:accuracy': ([0-9.]+)", out).group(1))
    http = float(re.search(r"HTTP accuracy on 359 validation images: ([0-9.]+)", out).group(1))
    assert validation >= 0.95 and http >= 0.9, (validation, http)
    assert "359 of 359 HTTP answers match the served model called directly" in out
    assert (tmp_path / "demo" / "model.tar.gz").exists()
