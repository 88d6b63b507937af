"""What ML users and operators look at: training curves (CSV, TensorBoard), the
server's Prometheus metrics, its access log and its shutdown line, on a tiny real
run and a real server."""

import csv
import json
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
from privsplit.errors import ConfigError, PrivsplitError
from privsplit.serve.protocol import encode_z
from privsplit.serve.server import REFUSAL_KINDS, BackgroundServer, create_app

TOKEN = "observability-token-0123456789"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tests.conftest import TINY

    out = tmp_path_factory.mktemp("obs") / "run"
    assert main(["train", "--out", str(out), "--no-progress", "--no-privacy-check",
                 *sum((["--set", s] for s in TINY), [])]) == 0
    return out


# --- training curves ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_csv_logger_writes_every_epoch_and_continues_on_resume(tiny, tmp_path):
    from privsplit.loggers import CSVLogger
    from privsplit.train.engine import Trainer

    run = tmp_path / "run"
    Trainer(tiny("train.epochs=2"), run, callbacks=[CSVLogger()], progress=False).fit()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    jsonl = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row, m in zip(rows, jsonl):  # the same numbers as metrics.jsonl, one column per metric
        assert float(row["train/task_loss"]) == pytest.approx(m["train/task_loss"])
        assert float(row["test/task/acc"]) == pytest.approx(m["test/task/acc"])
        assert float(row["epoch_s"]) == pytest.approx(m["epoch_s"])
    # A resumed run continues the same file; a CSV elsewhere works too.
    elsewhere = tmp_path / "curves" / "run.csv"
    Trainer(tiny("train.epochs=3"), run, resume=True, callbacks=[CSVLogger(), CSVLogger(elsewhere)],
            progress=False).fit()
    assert [r["epoch"] for r in csv.DictReader((run / "metrics.csv").open())] == ["1", "2", "3"]
    assert [r["epoch"] for r in csv.DictReader(elsewhere.open())] == ["3"]


@pytest.mark.slow
def test_tensorboard_logger_writes_epoch_and_step_curves(tiny, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from privsplit.loggers import TensorBoardLogger
    from privsplit.train.engine import Trainer

    run = tmp_path / "run"
    Trainer(tiny("train.epochs=2"), run, callbacks=[TensorBoardLogger(steps=True)], progress=False).fit()
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/task_loss", "test/task/acc", "epoch_s", "step/train/task_loss"} <= set(tags)
    jsonl = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    acc = events.Scalars("test/task/acc")
    assert [e.step for e in acc] == [1, 2]
    assert [e.value for e in acc] == pytest.approx([m["test/task/acc"] for m in jsonl])
    # 96 training images in batches of 32: 3 steps per epoch, numbered across epochs.
    assert [e.step for e in events.Scalars("step/train/task_loss")] == [1, 2, 3, 4, 5, 6]


def test_tensorboard_missing_is_one_line(monkeypatch):
    from privsplit.loggers import TensorBoardLogger

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` fails as if not installed
    with pytest.raises(ConfigError) as e:
        TensorBoardLogger()
    assert "pip install tensorboard" in str(e.value) and "\n" not in str(e.value)


# --- the server's metrics -------------------------------------------------------------------------------------


def scrape(url: str, token: str | None = TOKEN) -> dict[tuple[str, tuple], float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


@pytest.mark.slow
def test_metrics_count_requests_refusals_latency_and_batches(run_dir):
    net_shape = json.loads((run_dir / "run.json").read_text())["z_shape"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with BackgroundServer(create_app(run_dir, TOKEN, max_batch=4)) as srv:
        assert httpx.get(f"{srv.url}/metrics").status_code == 401  # the token is needed, as for /v1/model
        before = scrape(srv.url)
        assert before[("privsplit_requests_in_flight", ())] == 1  # the scrape itself
        assert {k: before[("privsplit_refusals_total", (("kind", k),))] for k in REFUSAL_KINDS} == {
            k: 1 if k == "unauthorized" else 0 for k in REFUSAL_KINDS}  # every kind is there from the start
        for n in (1, 3):
            z = np.random.default_rng(n).standard_normal((n, *net_shape)).astype(np.float32)
            assert httpx.post(f"{srv.url}/v1/infer", content=encode_z(z), headers=auth).status_code == 200
        assert httpx.post(f"{srv.url}/v1/infer", content=b"not a message", headers=auth).status_code == 400
        assert httpx.get(f"{srv.url}/v1/model", headers={"Authorization": "Bearer wrong-token-000000"}).status_code == 401
        hostile = [f"/x{i}" * 50 for i in range(20)]  # unknown paths: counted, never a label of their own
        for path in hostile:
            assert httpx.get(f"{srv.url}{path}", headers=auth).status_code == 404
        after = scrape(srv.url)
    ok = ("privsplit_requests_total", (("endpoint", "/v1/infer"), ("status", "200")))
    assert after[ok] - before.get(ok, 0) == 2
    assert after[("privsplit_requests_total", (("endpoint", "/v1/infer"), ("status", "400")))] == 1
    assert after[("privsplit_requests_total", (("endpoint", "other"), ("status", "404")))] == 20
    assert after[("privsplit_refusals_total", (("kind", "bad_request"),))] == 1
    assert after[("privsplit_refusals_total", (("kind", "unauthorized"),))] == 2  # the first /metrics and /v1/model
    assert after[("privsplit_batch_size_count", ())] == 2 and after[("privsplit_batch_size_sum", ())] == 4
    assert after[("privsplit_batch_size_bucket", (("le", "1.0"),))] == 1
    assert after[("privsplit_request_duration_seconds_count", (("endpoint", "/v1/infer"),))] == 3
    assert after[("privsplit_connections_open", ())] >= 1
    assert not any("x0" in str(labels) for _, labels in after)
    assert len(after) < 200  # bounded, whatever the clients sent


@pytest.mark.slow
def test_metrics_without_token_and_switched_off(run_dir):
    with BackgroundServer(create_app(run_dir)) as srv:  # loopback without a token: open like every endpoint
        assert httpx.get(f"{srv.url}/v1/health").status_code == 200
        m = scrape(srv.url, token=None)
        assert m[("privsplit_requests_total", (("endpoint", "/v1/health"), ("status", "200")))] == 1
        assert m[("privsplit_model_info", (("backbone", "resnet18"), ("method", "ours"), ("split", "rn18_3")))] == 1
    app = create_app(run_dir, metrics=False)
    with BackgroundServer(app) as srv:
        assert httpx.get(f"{srv.url}/metrics").status_code == 404
        assert httpx.get(f"{srv.url}/v1/health").status_code == 200
    assert app.state.metrics.statuses == {404: 1, 200: 1}  # counted all the same, for the shutdown line


@pytest.mark.slow
def test_metrics_need_prometheus_client(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(PrivsplitError) as e:
        create_app(run_dir)
    assert "pip install 'privsplit[serve]'" in str(e.value) and "--no-metrics" in str(e.value)
    create_app(run_dir, metrics=False)  # the rest works without it


def test_connection_refusals_are_counted(run_dir):
    app = create_app(run_dir, TOKEN)
    with BackgroundServer(app, header_timeout=0.3) as srv:
        host, port = srv.url.rsplit("//", 1)[1].split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"GET /v1/health HTTP/1.1\r\n")  # never finishes its head
            s.settimeout(5)
            assert b"408" in s.recv(4096)
        deadline = time.monotonic() + 5
        while app.state.metrics.refusals["header_timeout"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        m = scrape(srv.url)
    assert m[("privsplit_refusals_total", (("kind", "header_timeout"),))] == 1


# --- access log and shutdown line (the real command) ----------------------------------------------------------


def serve(run_dir, *flags):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "privsplit", "serve", str(run_dir), "--port", str(port), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/v1/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {proc.communicate()[0]}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--access-log"], []], ids=["access-log", "no-access-log"])
def test_access_log_only_with_the_flag_and_a_line_at_shutdown(run_dir, flags):
    proc, url = serve(run_dir, *flags)
    try:
        assert httpx.get(f"{url}/v1/model").status_code == 200
        assert httpx.get(f"{url}/v1/model?x=%0a%22").status_code == 200  # a hostile query string
        assert httpx.get(f"{url}/metrics").status_code == 200
        host, port = url.rsplit("//", 1)[1].split(":")
        with socket.create_connection((host, int(port))) as s:  # a raw quote, which httpx would escape
            s.sendall(b'GET /v1/health?"q HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    lines = out.splitlines()
    access = [ln for ln in lines if re.match(r"\d{4}-\d\d-\d\d [\d:,]+ access 127\.0\.0\.1:\d+ ", ln)]
    if flags:
        assert len(access) == 5, out  # /v1/health (the wait for start and the raw one), /v1/model twice, /metrics
        assert any('"GET /v1/model" 200 ' in ln and ln.endswith(" B") for ln in access), out
        assert any('"GET /v1/model?x=%0a%22" 200' in ln for ln in access), out
        assert any('"GET /v1/health?%22q" 200' in ln for ln in access), out  # escaped: the line stays parseable
        assert "access log on stdout" in lines[0]
    else:
        assert access == [], out
    assert "Prometheus metrics at /metrics" in lines[0]
    stop = [ln for ln in lines if ln.startswith(f"stopped serving {run_dir}: up ")]
    assert len(stop) == 1, out
    assert "5 request(s) answered (200: 5); refused: none" in stop[0]
    assert "Traceback" not in out


@pytest.mark.slow
def test_train_flags_write_the_csv_and_tensorboard_curves(tmp_path):
    """privsplit train --log-csv / --tensorboard: the loggers through the command line."""
    from conftest import TINY
    from privsplit.cli import main

    sets = [a for s in TINY for a in ("--set", s)]
    run = tmp_path / "run"
    flags = ["--log-csv"]
    try:
        import tensorboard  # noqa: F401

        flags.append("--tensorboard")
    except ImportError:
        pass
    assert main(["train", "--out", str(run), "--no-progress", "--no-privacy-check", "--threads", "1", *flags, *sets]) == 0
    rows = (run / "metrics.csv").read_text().splitlines()
    epochs = sum(1 for _ in open(run / "metrics.jsonl"))
    assert rows[0].startswith("epoch") and len(rows) == 1 + epochs >= 2
    if "--tensorboard" in flags:
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
