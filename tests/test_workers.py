"""`privsplit serve --workers N`: real worker processes on one socket, the server's limits
split among them, /metrics summed over them, a dead worker replaced, clean stops."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from privsplit.cli import main
from privsplit.serve.protocol import encode_z
from privsplit.serve.workers import cores, shares

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads worker processes from /proc")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tests.conftest import TINY

    out = tmp_path_factory.mktemp("workers") / "run"
    assert main(["train", "--out", str(out), "--no-progress", "--no-privacy-check",
                 *sum((["--set", s] for s in [*TINY, "model.split=rn18_2"]), [])]) == 0
    return out


def children(pid):
    """Pids of the worker processes of the server ``pid`` (not multiprocessing's resource tracker)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmd = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmd:
            found.append(int(entry))
    return sorted(found)


def wait_for(what, check, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (got := check()):
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def start(run_dir, tmp_path, *flags):
    out, err = open(tmp_path / "out.txt", "w+"), open(tmp_path / "err.txt", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "privsplit", "serve", str(run_dir), "--port", "0", "--workers", "2",
                             "--oversubscribe", *flags], stdout=out, stderr=err, text=True)

    def port():
        text = (tmp_path / "out.txt").read_text()
        assert proc.poll() is None, (text, (tmp_path / "err.txt").read_text())
        m = re.search(r"on http://127\.0\.0\.1:(\d+) ", text)
        return int(m.group(1)) if m else None

    return proc, wait_for("the serving line", port, 120)


BODY = encode_z(np.random.default_rng(0).random((2, 128, 2, 2), dtype=np.float32))


def infer(port):
    with httpx.Client(timeout=30) as c:  # a connection of its own: any worker may take it
        return c.post(f"http://127.0.0.1:{port}/v1/infer", content=BODY).status_code


def counted(port, status="200"):
    with httpx.Client(timeout=30) as c:
        text = c.get(f"http://127.0.0.1:{port}/metrics").text
    m = re.search(r'^privsplit_requests_total\{endpoint="/v1/infer",status="%s"\} (\S+)$' % status, text, re.M)
    return float(m.group(1)) if m else 0.0


def hold(port):
    """A connection that sent a complete request and keeps its slot (keep-alive); its answer's status."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    return s, int(s.recv(4096).split(b" ", 2)[1])


@pytest.mark.slow
def test_two_workers_split_the_limits_sum_the_metrics_and_replace_a_dead_one(run_dir, tmp_path):
    proc, port = start(run_dir, tmp_path, "--max-connections", "4", "--keep-alive", "30")
    try:
        workers = children(proc.pid)
        assert len(workers) == 2, workers
        assert [infer(port) for _ in range(12)] == [200] * 12
        # Whichever worker answers /metrics, it counts every worker's requests.
        assert [counted(port) for _ in range(6)] == [12.0] * 6

        # At most 4 connections for the server: 2 per worker, whichever worker the kernel picks.
        held = [hold(port) for _ in range(8)]
        ok = sum(status == 200 for _, status in held)
        assert 2 <= ok <= 4, [status for _, status in held]
        assert all(status in (200, 503) for _, status in held)
        for s, _ in held:
            s.close()

        # A worker killed outright: the other answers meanwhile, the parent starts another.
        os.kill(workers[0], signal.SIGKILL)
        wait_for("a replacement worker", lambda: len(children(proc.pid)) == 2 and workers[0] not in children(proc.pid))
        wait_for("the replacement serving", lambda: "serving again" in (tmp_path / "out.txt").read_text())
        assert [infer(port) for _ in range(6)] == [200] * 6
        assert counted(port) >= 12 + 6 - 0  # the dead worker's counts stay in the server's totals
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    out, err = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert rc == 0, (out, err)
    assert "killed by SIGKILL" in out and "Traceback" not in err + out, (out, err)
    assert len(re.findall(r"^worker [12] of 2: stopped serving", out, re.M)) == 2, out
    assert children(proc.pid) == []


@pytest.mark.slow
def test_workers_stop_when_their_parent_is_killed(run_dir, tmp_path):
    proc, port = start(run_dir, tmp_path)
    workers = children(proc.pid)
    assert len(workers) == 2 and infer(port) == 200
    proc.kill()
    proc.wait(10)
    alive = lambda: [w for w in workers if os.path.exists(f"/proc/{w}") and "Z" not in open(f"/proc/{w}/stat").read().split()[2]]
    wait_for("the orphaned workers to stop", lambda: not alive(), 30)
    with pytest.raises(httpx.ConnectError):
        infer(port)


@pytest.mark.parametrize("flags, message", [
    (["--workers", "0"], "--workers must be an integer at least 1"),
    (["--workers", str(cores() + 1), "--threads", "1"], "give --oversubscribe"),
    (["--workers", "2", "--oversubscribe", "--max-connections", "1"], "fewer than --workers 2"),
    (["--workers", "2", "--oversubscribe", "--queue-samples", "100"], "give at least 128"),
])
def test_bad_worker_settings_are_one_line_before_any_process_starts(tmp_path, capsys, flags, message):
    assert main(["serve", str(tmp_path), "--port", "0", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_shares_add_up_and_differ_by_at_most_one():
    for total in range(1, 40):
        for n in range(1, 9):
            s = shares(total, n)
            assert sum(s) == total and len(s) == n and max(s) - min(s) <= 1
