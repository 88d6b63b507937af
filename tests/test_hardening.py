"""Issue 20, hardening second round: each numbered item against the real server on
127.0.0.1 and real files (run folders, checkpoints, exports, images)."""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from privsplit.cli import main
from privsplit.errors import CheckpointError, PrivsplitError
from privsplit.serve import Client, ServeError
from privsplit.serve import observe as server_module  # LogLimiter's window and line counts
from privsplit.serve.protocol import encode_z
from privsplit.serve.server import BackgroundServer, LogLimiter, create_app

TOKEN = "hardening-token-0123456789"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tests.conftest import TINY

    out = tmp_path_factory.mktemp("hardening") / "run"
    sets = [*TINY, "model.split=rn18_2", "reduction=[{op: noise, sigma: 0.5}]"]
    assert main(["train", "--out", str(out), "--no-progress", *sum((["--set", s] for s in sets), [])]) == 0
    return out


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKEN)
    return path


def body(n=2):
    z_shape = json.loads(Path(RUN_DIR_CACHE["dir"], "run.json").read_text())["z_shape"]
    return encode_z(np.random.default_rng(0).normal(size=(n, *z_shape)).astype(np.float32))


RUN_DIR_CACHE: dict = {}


@pytest.fixture(autouse=True)
def _remember(run_dir):
    RUN_DIR_CACHE["dir"] = run_dir


def one_line(text):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def port_of(url):
    return int(url.rsplit(":", 1)[1])


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


# --- 1. no lock-out -------------------------------------------------------------------------------------------

HOSTILE = textwrap.dedent(
    """
    import selectors, socket, sys, time
    port, n, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    sel = selectors.DefaultSelector()
    opened = 0

    def open_one():
        global opened
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
        except OSError:
            return
        s.sendall(b"POST /v1/infer HTTP/1.1\\r\\nHost: x\\r\\nContent-Le")  # half a head, never finished
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        opened += 1

    for _ in range(n):
        open_one()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:  # the server closed it: reopen at once
                sel.unregister(s)
                s.close()
                open_one()
        while len(sel.get_map()) < n and time.monotonic() < end:
            open_one()
    print(opened)
    """
)


@pytest.mark.slow
def test_hostile_reconnecting_sockets_cannot_lock_out_a_valid_client(run_dir):
    """50 sockets that never finish a request head, each reopened as soon as the server
    closes it, against --max-connections 50 (the audit's attack): every authenticated
    request, on a kept-alive connection and on a fresh connection each, is answered
    200 within 1 s while the attack runs."""
    app = create_app(run_dir, TOKEN, max_batch=4)
    seconds, hostile = 8.0, 50
    with BackgroundServer(app, max_connections=50, header_timeout=10) as srv:
        attack = subprocess.Popen([sys.executable, "-c", HOSTILE, str(port_of(srv.url)), str(hostile), str(seconds)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 5
            while len(srv.server.server_state.connections) < hostile and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(srv.server.server_state.connections) >= hostile - 2  # the slots are full of hostile sockets
            auth = {"Authorization": f"Bearer {TOKEN}"}
            latencies, statuses = [], []
            end = time.monotonic() + seconds - 2
            with httpx.Client(base_url=srv.url, headers=auth, timeout=5) as kept:
                while time.monotonic() < end:
                    for send in (lambda: kept.post("/v1/infer", content=body()),  # kept-alive connection
                                 lambda: httpx.post(f"{srv.url}/v1/infer", content=body(), headers=auth, timeout=5)):
                        t0 = time.monotonic()
                        r = send()
                        latencies.append(time.monotonic() - t0)
                        statuses.append(r.status_code)
        finally:
            out, _ = attack.communicate(timeout=30)
    reopened = int(out.strip() or 0) - hostile
    print(f"\n{len(statuses)} valid requests while {hostile} hostile sockets reconnected {reopened} times: "
          f"{statuses.count(200)} answered 200, max latency {max(latencies):.3f} s, "
          f"median {sorted(latencies)[len(latencies) // 2]:.3f} s")
    assert statuses and set(statuses) == {200}, statuses
    assert max(latencies) < 1.0
    assert reopened >= len(statuses) // 2  # each fresh valid connection pushed a hostile one out


@pytest.mark.slow
def test_cap_counts_proven_connections_and_evicts_unproven_ones(run_dir):
    """--max-connections 3: three silent sockets do not keep a fourth client out (the
    oldest silent one is told 503 and closed); three proven kept-alive connections do."""
    with BackgroundServer(create_app(run_dir), max_connections=3, header_timeout=10) as srv:
        port = port_of(srv.url)
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        deadline = time.monotonic() + 5
        while len(srv.server.server_state.connections) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert httpx.get(f"{srv.url}/v1/health", timeout=3).status_code == 200
        silent[0].settimeout(3)
        reply = silent[0].recv(4096)
        assert reply.startswith(b"HTTP/1.1 503 ") and b"made room" in reply
        for s in silent:
            s.close()
        deadline = time.monotonic() + 5
        while srv.server.server_state.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        proven = []
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=3)
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")  # kept alive: proven
            proven.append(s)
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 503 ") and b"server busy" in reply
        for s in proven:
            s.close()


def test_a_wrong_token_does_not_prove_a_connection(run_dir):
    with BackgroundServer(create_app(run_dir, TOKEN), max_connections=1, header_timeout=10) as srv:
        s = socket.create_connection(("127.0.0.1", port_of(srv.url)), timeout=3)
        s.sendall(b"GET /v1/model HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-token-0123456789\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 401 ")
        r = httpx.get(f"{srv.url}/v1/model", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=3)
        assert r.status_code == 200  # the unproven connection made room
        s.close()


# --- 2. no smuggling --------------------------------------------------------------------------------------------


def test_content_length_with_transfer_encoding_is_400_and_closed(run_dir):
    app = create_app(run_dir, max_batch=4)
    with BackgroundServer(app) as srv:
        hidden = b"GET /v1/model HTTP/1.1\r\nHost: x\r\n\r\n"
        request = (b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"0\r\n\r\n" % (5 + len(hidden))) + hidden
        with socket.create_connection(("127.0.0.1", port_of(srv.url)), timeout=5) as s:
            s.sendall(request)
            reply = b""
            while chunk := s.recv(65536):  # ends when the server closes the connection
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 400 ") and b"not both" in reply
        assert reply.count(b"HTTP/1.1 ") == 1  # the hidden request was not answered
        assert app.state.infer_requests == 0
        assert httpx.post(f"{srv.url}/v1/infer", content=body()).status_code == 200


def test_served_connections_send_each_answer_at_once(run_dir):
    """TCP_NODELAY on every accepted connection, as `privsplit serve` listens (its own
    socket from cli.serve.listen). Without it, each answer on a kept-alive connection
    waited about 40 ms for the client's delayed ACK (Nagle holds the body's write)."""
    import threading

    import uvicorn

    from privsplit.cli.serve import listen
    from privsplit.serve.server import uvicorn_config

    server = uvicorn.Server(uvicorn_config(create_app(run_dir)))
    sock = listen("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        with socket.create_connection(sock.getsockname()[:2], timeout=5) as s:
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
            (conn,) = server.server_state.connections
            served = conn.transport.get_extra_info("socket")
            assert served.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


# --- 3. TLS ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 made now (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


@pytest.mark.slow
def test_tls_server_and_verifying_clients(run_dir, cert, exported, tmp_path, capsys):
    crt, key = cert
    images = torch.rand(2, 3, 16, 16)
    with BackgroundServer(create_app(run_dir, TOKEN, max_batch=4), tls_cert=crt, tls_key=key) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        out = Client(run_dir, srv.url, TOKEN, ca_file=crt).infer(images)
        assert len(out) == 2 and all("label" in r for r in out)
        with pytest.raises(ServeError, match="certificate this client does not trust.*--ca-file"):
            Client(run_dir, srv.url, TOKEN).infer(images)  # the system CAs do not know it
        with pytest.raises(httpx.HTTPError):  # plain http is not spoken on a TLS port
            httpx.get(srv.url.replace("https", "http") + "/v1/health", timeout=3)
        tf = tmp_path / "token"
        tf.write_text(TOKEN)
        img = tmp_path / "a.png"
        from PIL import Image

        Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(img)
        assert main(["infer", str(run_dir), str(img), "--server", srv.url, "--token-file", str(tf),
                     "--ca-file", str(crt)]) == 0
        assert str(img) in capsys.readouterr().out
        r = run_edge("infer", str(exported), str(img), "--server", srv.url, "--token-file", str(tf), "--ca-file", str(crt))
        assert r.returncode == 0 and str(img) in r.stdout, r.stderr
        r = run_edge("infer", str(exported), str(img), "--server", srv.url, "--token-file", str(tf))
        assert r.returncode == 2 and "does not trust" in one_line(r.stderr)


def test_token_never_sent_in_clear_to_another_host():
    from privsplit_edge.client import Http
    from privsplit_edge.errors import EdgeError

    with pytest.raises(EdgeError, match="refusing to send the bearer token over plain http to 10.1.2.3.*--allow-insecure"):
        Http("http://10.1.2.3:8000", TOKEN)
    Http("http://10.1.2.3:8000", TOKEN, allow_insecure_token=True)  # forced: allowed
    Http("http://127.0.0.1:8000", TOKEN)  # loopback never leaves the machine
    Http("https://10.1.2.3:8000", TOKEN)  # encrypted
    Http("http://10.1.2.3:8000")  # no token, nothing to leak


@pytest.mark.slow
def test_cli_serve_tls_flags(run_dir, cert, tmp_path, capsys):
    crt, key = cert
    assert main(["serve", str(run_dir), "--tls-cert", str(crt)]) == 2
    assert "go together" in one_line(capsys.readouterr().err)
    assert main(["serve", str(run_dir), "--tls-cert", str(key), "--tls-key", str(crt)]) == 2
    assert "cannot use --tls-cert" in one_line(capsys.readouterr().err)


# --- 4. run.json is checked against the heads ----------------------------------------------------------------


@pytest.mark.slow
def test_edited_z_shape_is_refused_at_start(run_dir, tmp_path, capsys):
    bad = tmp_path / "run"
    shutil.copytree(run_dir, bad)
    record = json.loads((bad / "run.json").read_text())
    record["z_shape"] = [record["z_shape"][0] + 3, *record["z_shape"][1:]]
    (bad / "run.json").write_text(json.dumps(record))
    with pytest.raises(PrivsplitError, match=r"states z_shape .* but head 'task' cannot take it"):
        create_app(bad)
    assert main(["serve", str(bad)]) == 2
    assert "run.json" in one_line(capsys.readouterr().err)


# --- 5. refusals are summed up, not logged one by one -----------------------------------------------------------


@pytest.mark.slow
def test_refused_connections_are_aggregated_in_the_log(run_dir, monkeypatch):
    monkeypatch.setattr(server_module, "LOG_WINDOW", 1.0)
    log = logging.getLogger("uvicorn.error")  # configured by uvicorn at start: listen after that
    handler = Records()
    try:
        with BackgroundServer(create_app(run_dir), max_connections=1, header_timeout=10) as srv:
            log.addHandler(handler)
            port = port_of(srv.url)
            held = socket.create_connection(("127.0.0.1", port), timeout=3)
            held.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert held.recv(4096).startswith(b"HTTP/1.1 200 ")  # proven: it keeps its slot
            for _ in range(300):
                with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
                    assert s.recv(4096).startswith(b"HTTP/1.1 503 ")
            time.sleep(1.5)  # the window ends: one line sums up the rest
            held.close()
    finally:
        log.removeHandler(handler)
    lines = [r.getMessage() for r in handler.records]
    refused = [ln for ln in lines if "refused" in ln]
    print(f"\n300 refused connections -> {len(refused)} log lines")
    assert len(refused) <= 2 * (server_module.LOG_FULL_LINES + 1), lines
    total = sum(int(ln.split(": ", 1)[1].split()[0]) for ln in refused if "more in the last" in ln)
    assert total + sum("more in the last" not in ln for ln in refused) == 300


def test_log_limiter_counts_the_rest():
    log = logging.getLogger("uvicorn.error")
    handler = Records()
    log.addHandler(handler)
    try:
        limiter = LogLimiter(window=0.2, full=2)
        for i in range(50):
            limiter.warn("test kind", "event %d", i)
        time.sleep(0.25)
        limiter.warn("test kind", "event after")
    finally:
        log.removeHandler(handler)
    lines = [r.getMessage() for r in handler.records]
    assert lines == ["event 0", "event 1", "test kind: 48 more in the last 0.2 s (not logged one by one)", "event after"]


# --- 14. a port in use -------------------------------------------------------------------------------------------


def test_port_in_use_is_one_privsplit_line(run_dir, capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", str(run_dir), "--port", str(port)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("privsplit serve: error: cannot listen on 127.0.0.1:") and "choose another --port" in line


# --- 6, 7. exports: atomic, hashed, verified --------------------------------------------------------------------


def flip_a_bit(path, from_end=40):
    data = bytearray(path.read_bytes())
    data[-from_end] ^= 1
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "onnx"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_export_records_digests_and_an_interrupted_export_keeps_the_old_files(run_dir, exported, tmp_path):
    from privsplit.export import export_obfuscator
    from privsplit.train.checkpoint import file_digest

    manifest = json.loads((exported / "obfuscator.json").read_text())
    assert manifest["sha256"] == {"obfuscator.onnx": file_digest(exported / "obfuscator.onnx")}
    assert not [p.name for p in exported.iterdir() if p.name.startswith(".")]  # no temporary left
    out = tmp_path / "again"
    shutil.copytree(exported, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / ".tmp-obfuscator.onnx").mkdir()  # the temporary name cannot be written: the export fails midway
    (out / ".tmp-obfuscator.onnx" / "x").write_text("x")
    with pytest.raises(PrivsplitError):
        export_obfuscator(run_dir, "onnx", out)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # the model and the manifest that vouches for it are untouched


@pytest.mark.slow
def test_edge_client_verifies_the_onnx_file(run_dir, exported, tmp_path):
    from privsplit_edge.client import EdgeClient
    from privsplit_edge.errors import EdgeError

    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    flip_a_bit(bad / "obfuscator.onnx", from_end=200)
    with pytest.raises(EdgeError, match=r"obfuscator.onnx is damaged or was replaced"):
        EdgeClient(bad, "http://127.0.0.1:9")
    EdgeClient(exported, "http://127.0.0.1:9")  # the intact one loads


# --- 11. the edge client on broken files, --out checks, folders for files ------------------------------------


def run_edge(*args):
    return subprocess.run([sys.executable, "-m", "privsplit_edge", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_edge_cli_on_broken_exports_is_one_line(exported, tmp_path):
    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    model = (exported / "obfuscator.onnx").read_bytes()
    manifest = (exported / "obfuscator.json").read_text()
    no_digest = json.dumps({k: v for k, v in json.loads(manifest).items() if k != "sha256"})
    cases = {  # name: (obfuscator.onnx bytes, obfuscator.json text, words)
        "truncated onnx": (model[: len(model) // 2], manifest, "damaged or was replaced"),
        "random onnx": (os.urandom(4096), manifest, "damaged or was replaced"),
        "empty onnx": (b"", manifest, "damaged or was replaced"),
        "truncated onnx, old manifest": (model[: len(model) // 2], no_digest, "is not a readable ONNX model"),
        "random onnx, old manifest": (os.urandom(4096), no_digest, "is not a readable ONNX model"),
        "empty onnx, old manifest": (b"", no_digest, "is not a readable ONNX model"),
        "truncated manifest": (model, manifest[: len(manifest) // 2], "is not a readable export manifest"),
        "manifest of another shape": (model, '{"files": []}', "is not a complete export manifest"),
    }
    for name, (onnx, text, words) in cases.items():
        d = tmp_path / name.replace(" ", "_").replace(",", "")
        d.mkdir()
        (d / "obfuscator.onnx").write_bytes(onnx)
        (d / "obfuscator.json").write_text(text)
        r = run_edge("infer", str(d), str(img), "--server", "http://127.0.0.1:9")
        assert r.returncode == 2, (name, r.stderr)
        assert words in one_line(r.stderr), (name, r.stderr)


@pytest.mark.slow
def test_out_and_folder_mistakes_are_one_line_before_any_work(run_dir, exported, tmp_path, capsys):
    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert main(["train", "--out", str(a_file), "--set", "train.epochs=1"]) == 2
    assert "is a file, not a folder" in one_line(capsys.readouterr().err)
    assert main(["export", str(run_dir), "--out", str(a_file)]) == 2
    assert "is a file, not a folder" in one_line(capsys.readouterr().err)
    app = create_app(run_dir)
    with BackgroundServer(app) as srv:
        assert main(["infer", str(run_dir), str(img), "--server", srv.url, "--out", str(tmp_path)]) == 2
        assert "is a folder: give a file name" in one_line(capsys.readouterr().err)
        assert main(["infer", str(run_dir), str(tmp_path), "--server", srv.url]) == 2
        assert "is a folder, not an image file" in one_line(capsys.readouterr().err)
        r = run_edge("infer", str(exported), str(img), "--server", srv.url, "--out", str(tmp_path))
        assert r.returncode == 2 and "is a folder" in one_line(r.stderr)
        assert app.state.infer_requests == 0  # refused before anything was sent
        assert main(["infer", str(run_dir), str(img), "--server", srv.url, "--out", str(tmp_path / "r.json")]) == 0
        assert json.loads((tmp_path / "r.json").read_text())[0]["image"] == str(img)


# --- 7. run folders and checkpoints: digests recorded and verified --------------------------------------------


@pytest.mark.slow
def test_run_weights_are_verified_on_load(run_dir, tmp_path, capsys):
    from privsplit.run import load_run
    from privsplit.train.checkpoint import file_digest, load_checkpoint

    record = json.loads((run_dir / "run.json").read_text())
    names = {p.name for p in run_dir.glob("*.safetensors")}
    assert {"obfuscator.safetensors", "heads.safetensors"} <= names and set(record["weights_sha256"]) == names
    assert all(record["weights_sha256"][n] == file_digest(run_dir / n) for n in names)
    for name in names:
        bad = tmp_path / name
        shutil.copytree(run_dir, bad)
        flip_a_bit(bad / name)
        with pytest.raises(CheckpointError, match=f"{name} is damaged or was replaced"):
            load_run(bad)
    with pytest.raises(PrivsplitError, match="heads.safetensors is damaged"):
        create_app(tmp_path / "heads.safetensors")
    assert main(["serve", str(tmp_path / "heads.safetensors")]) == 2
    assert "heads.safetensors is damaged" in one_line(capsys.readouterr().err)
    # A checkpoint's weights likewise (meta.json holds their digests).
    ckpt = tmp_path / "obfuscator.safetensors" / "checkpoints" / "epoch-0001"
    meta = json.loads((ckpt / "meta.json").read_text())
    assert set(meta["sha256"]) == {"model.safetensors", "optim.safetensors"}
    flip_a_bit(ckpt / "model.safetensors")
    run = load_run(run_dir)
    with pytest.raises(CheckpointError, match="model.safetensors is damaged or was replaced"):
        load_checkpoint(ckpt, run.model)
    # A run folder written before digests were recorded still loads (without the check).
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    del record["weights_sha256"]
    (old / "run.json").write_text(json.dumps(record))
    load_run(old)
    create_app(old)


# --- 8. a checkpoint's epoch is checked ----------------------------------------------------------------------


def test_tampered_checkpoint_epoch_is_refused(run_dir, tmp_path, capsys):
    bad = tmp_path / "run"
    shutil.copytree(run_dir, bad)
    meta_path = bad / "checkpoints" / "epoch-0001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["epoch"] = 99
    meta_path.write_text(json.dumps(meta))
    assert main(["train", "--resume", str(bad), "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "says epoch 99, but the folder is epoch-0001" in line and "delete this checkpoint folder" in line
    from privsplit.train.checkpoint import read_meta

    (bad / "checkpoints" / "epoch-0001").rename(bad / "checkpoints" / "epoch-0099")  # name and meta agree now
    with pytest.raises(CheckpointError, match="of a run planned for 1 epoch"):
        read_meta(bad / "checkpoints" / "epoch-0099")


# --- 9. a failed write is one line naming the path and the last good checkpoint ------------------------------


@pytest.mark.slow
def test_disk_full_while_writing_is_one_line(run_dir, tmp_path, capsys):
    from privsplit.train.checkpoint import save_weights

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    target = tmp_path / "w.safetensors"
    (tmp_path / ".w.safetensors.tmp").symlink_to("/dev/full")  # every write there fails with ENOSPC
    with pytest.raises(CheckpointError, match=r"cannot write .*w.safetensors \(.*No space left on device.*free some disk"):
        save_weights(target, {"a": torch.zeros(1000)})
    assert not target.exists()
    # The same during a resumed run's final files: one line, the last good checkpoint named.
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / ".heads.safetensors.tmp").symlink_to("/dev/full")
    assert main(["train", "--resume", str(run), "--no-progress", "--set", "train.epochs=2"]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"cannot write {run / 'heads.safetensors'}" in line
    assert f"the last good checkpoint is {run / 'checkpoints' / 'epoch-0002'}" in line
    assert not (run / "run.json").exists()  # not marked finished
    assert main(["train", "--resume", str(run), "--no-progress", "--set", "train.epochs=2"]) == 0  # space is back


# --- 10. one writer per run folder -------------------------------------------------------------------------


@pytest.mark.slow
def test_run_folder_lock(run_dir, tmp_path, capsys):
    from privsplit.errors import ConfigError
    from privsplit.lock import LOCK_NAME, FolderLock

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK_NAME).write_text(json.dumps({"pid": owner.pid, "host": socket.gethostname(), "since": "now"}))
        assert main(["train", "--resume", str(run), "--no-progress"]) == 2
        line = one_line(capsys.readouterr().err)
        assert f"run folder {run} is in use by process {owner.pid} on this host" in line
    finally:
        owner.kill()
        owner.wait()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # its owner is gone: taken over
    assert not (run / LOCK_NAME).exists()  # released at the end
    with FolderLock(run, "run folder"):
        with pytest.raises(ConfigError, match="is in use by process"):
            FolderLock(run, "run folder").acquire()
    (run / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "now"}))
    with pytest.raises(ConfigError, match=f"on host 'elsewhere'.*delete {run / LOCK_NAME}"):
        FolderLock(run, "benchmark output folder").acquire()


# --- 13. bad images in a CIFAR-10 folder ----------------------------------------------------------------------


def cifar_folder(root, extra):
    """A CIFAR-10 image-folder layout with 2 good 32x32 JPEGs per class and split, plus ``extra``."""
    from PIL import Image

    from privsplit.data.cifar10 import CLASSES

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(root / split / c / f"{i}.jpg")
    for name, make in extra.items():
        make(root / "train" / CLASSES[0] / name)


def broken_png(path):
    from PIL import Image

    Image.fromarray((np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 60] = os.urandom(50)  # the compressed pixels, not the chunk layout
    path.write_bytes(bytes(data))


def test_skip_bad_files_leaves_out_and_lists_every_unusable_file(tmp_path):
    from PIL import Image

    from privsplit.data.base import DataConfig, load_dataset
    from privsplit.errors import DataError

    extra = {
        "big.jpg": lambda p: Image.new("RGB", (2000, 1500), (10, 20, 30)).save(p),  # a whole JPEG, too big
        "small.png": lambda p: Image.new("RGB", (16, 16)).save(p),
        "broken.png": broken_png,  # header and end marker intact: passes the cheap check, fails to decode
    }
    cifar_folder(tmp_path, extra)
    with pytest.raises(DataError, match=r"3 image file\(s\) .* cannot be used: .*2000x1500 pixels.*skip_bad_files"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    with pytest.warns(UserWarning, match="left out 3"):
        train, test, info = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), skip_bad_files=True))
    assert len(train) == 20 and len(test) == 20
    assert sorted(Path(s.split(": ")[0]).name for s in info.skipped) == ["big.jpg", "broken.png", "small.png"]


def cut_jpeg(path, size=32):
    """A real JPEG cut in its scan data, with an end marker appended: its header
    and ending look whole, and Pillow decodes it padded with grey."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    noise = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    Path(path).write_bytes(data[: len(data) // 2] + b"\xff\xd9")


def test_a_jpeg_cut_in_its_scan_data_is_an_error_never_padded(tmp_path):
    from PIL import Image

    from privsplit.data.base import DataConfig, load_dataset, open_image
    from privsplit.errors import DataError
    from privsplit_edge.images import decode_square, image_problem

    bad = tmp_path / "cut.jpg"
    cut_jpeg(bad)
    assert image_problem(bad) is None  # the cheap check cannot see it...
    with Image.open(bad) as im:
        im.load()  # ...and Pillow decodes it silently
    with pytest.raises(ValueError, match="damaged JPEG data"):
        decode_square(bad, 32)  # the decoder the data sets and the edge client share
    with pytest.raises(DataError, match="damaged JPEG data"):
        open_image(bad, 32)
    Image.new("RGB", (32, 32), (1, 2, 3)).save(tmp_path / "whole.jpg")
    assert decode_square(tmp_path / "whole.jpg", 32).shape == (32, 32, 3)

    root = tmp_path / "cifar"
    cifar_folder(root, {"cut.jpg": cut_jpeg})
    with pytest.raises(DataError, match=r"cut\.jpg: cannot be decoded \(damaged JPEG data"):
        load_dataset(DataConfig(name="cifar10", root=str(root)))
    with pytest.warns(UserWarning, match="left out 1"):
        train, test, info = load_dataset(DataConfig(name="cifar10", root=str(root), skip_bad_files=True))
    assert [Path(x.split(": ")[0]).name for x in info.skipped] == ["cut.jpg"]


# --- 12. --queries: one bound, no empty items ---------------------------------------------------------------


def test_queries_share_one_bound_and_refuse_empty_items(run_dir, capsys):
    from privsplit.attacks import parse_queries
    from privsplit.config import MAX_QUERIES, AdversaryConfig, adversary_queries
    from privsplit.errors import ConfigError

    assert parse_queries(f"1,{MAX_QUERIES},inf")[-2:] == (MAX_QUERIES, float("inf"))
    for bad, words in {f"{MAX_QUERIES + 1}": f"from 1 to {MAX_QUERIES}", "99999999999": f"from 1 to {MAX_QUERIES}",
                       "1,,2": "empty item", "1,2,": "empty item", ",": "is empty"}.items():
        with pytest.raises(ConfigError, match=words):
            parse_queries(bad)
    with pytest.raises(ConfigError, match=f"at most {MAX_QUERIES}"):
        adversary_queries(AdversaryConfig(name="a", queries=MAX_QUERIES + 1))
    assert main(["evaluate", str(run_dir), "--queries", "1,,2"]) == 2
    assert "empty item" in one_line(capsys.readouterr().err)


def test_evaluate_names_a_file_given_for_a_run(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    assert main(["evaluate", str(f)]) == 2
    assert "is a file, not a run folder" in one_line(capsys.readouterr().err)
