"""The task network on Ray Serve (a local single-node Ray): the same wire format, token and
answers as `privsplit serve`, for the torch client and the torch-free edge client."""

import json
import socket
import sys

import httpx
import numpy as np
import pytest
import torch

from privsplit.cli import main
from privsplit.errors import PrivsplitError

TOKEN = "ray-token-0123456789abcdef"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run whose client adds no noise (sigma 0): every client gives the same z, so answers compare exactly."""
    from tests.conftest import TINY

    out = tmp_path_factory.mktemp("ray") / "run"
    sets = [*TINY, "model.split=rn18_2", "reduction=[{op: noise, sigma: 0.0}]"]
    assert main(["train", "--out", str(out), "--no-progress", "--no-privacy-check",
                 *sum((["--set", s] for s in sets), [])]) == 0
    return out


def test_bad_settings_are_one_line_errors(run_dir, tmp_path, monkeypatch):
    pytest.importorskip("ray.serve")
    from privsplit.serve.ray_serve import app, application

    with pytest.raises(PrivsplitError, match="needs a bearer token"):
        application(run_dir)
    with pytest.raises(PrivsplitError, match="replicas must be an integer at least 1"):
        application(run_dir, token=TOKEN, replicas=0)
    with pytest.raises(PrivsplitError, match="max_delay_ms.* must be a number of milliseconds"):
        application(run_dir, allow_no_token=True, max_delay_ms=float("nan"))
    with pytest.raises(PrivsplitError, match="queue_samples.* must be an integer at least 64"):
        application(run_dir, token=TOKEN, queue_samples=3)  # checked as each replica will, before deploying
    with pytest.raises(PrivsplitError, match="not both"):
        application(run_dir, token=TOKEN, token_file=tmp_path / "t")
    with pytest.raises(PrivsplitError, match="not a privsplit run folder"):
        application(tmp_path, token=TOKEN)  # not a run folder
    with pytest.raises(PrivsplitError, match="unknown argument.*replica\\b"):
        app({"run_dir": str(run_dir), "replica": "2"})
    with pytest.raises(PrivsplitError, match="replicas='two' is not a number"):
        app({"run_dir": str(run_dir), "replicas": "two"})
    with pytest.raises(PrivsplitError, match="must be true or false"):
        app({"run_dir": str(run_dir), "allow_no_token": "yes"})
    assert app({"run_dir": str(run_dir), "allow_no_token": True}) is not None  # a bool from a Serve config file
    monkeypatch.setitem(sys.modules, "ray", None)  # ray not installed
    with pytest.raises(PrivsplitError, match=r"pip install 'privsplit\[ray\]'"):
        application(run_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_replicas_answer_like_the_model_for_the_torch_and_edge_clients(run_dir, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    from privsplit.run import load_run
    from privsplit.serve import Client
    from privsplit.serve.ray_serve import NAME, app

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # what `serve run privsplit.serve.ray_serve:app run_dir=... token_file=... replicas=2` deploys
        serve.run(app({"run_dir": str(run_dir), "token_file": str(token_file), "replicas": "2", "threads": "1"}),
                  name=NAME, route_prefix="/")
        status = serve.status().applications[NAME].deployments[NAME]
        assert status.replica_states.get("RUNNING") == 2
        url = f"http://127.0.0.1:{port}"

        assert httpx.get(f"{url}/v1/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abcdef"}):
            refused = httpx.get(f"{url}/v1/model", headers=headers)
            assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
        bad = httpx.post(f"{url}/v1/infer", content=b"not safetensors", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bad.status_code == 400 and "expected" in bad.json()

        images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        model = load_run(run_dir, parts=("obfuscator", "heads")).model
        with torch.no_grad():
            want = model.heads["task"](model.obfuscator(images)).softmax(1).numpy()
        got = Client(run_dir, url, token=TOKEN).infer(images)
        np.testing.assert_allclose([r["probabilities"] for r in got], want, rtol=1e-5, atol=1e-6)

        # the edge client (ONNX, no torch in its code path) through `privsplit-edge infer`, unchanged
        from PIL import Image

        assert main(["export", str(run_dir), "--format", "onnx"]) == 0
        paths = []
        for i, x in enumerate(images[:3]):
            paths.append(str(tmp_path / f"img{i}.png"))
            Image.fromarray((x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(paths[-1])
        from privsplit_edge.client import main as edge_main

        out = tmp_path / "edge.json"
        assert edge_main(["infer", str(run_dir / "export"), *paths, "--server", url, "--token-file", str(token_file),
                          "--out", str(out)]) == 0
        mine = tmp_path / "torch.json"
        assert main(["infer", str(run_dir), *paths, "--server", url, "--token-file", str(token_file),
                     "--out", str(mine)]) == 0
        edge, torch_res = json.loads(out.read_text()), json.loads(mine.read_text())
        np.testing.assert_allclose([e["probabilities"] for e in edge], [t["probabilities"] for t in torch_res],
                                   atol=1e-5)

        # back-pressure: one replica holding one request in its queue and one running (the proxy two more);
        # a burst beyond that is answered 503 with Retry-After at once, the rest answered, nothing left waiting
        serve.run(app({"run_dir": str(run_dir), "token_file": str(token_file), "batch_samples": "1",
                       "max_batch": "1", "queue_samples": "1"}), name=NAME, route_prefix="/")
        from concurrent.futures import ThreadPoolExecutor

        from privsplit.serve.protocol import encode_z, run_identity

        body = encode_z(np.zeros((1, *run_identity(run_dir)["z_shape"]), np.float32))

        def send(_: int) -> httpx.Response:
            return httpx.post(f"{url}/v1/infer", content=body, timeout=60,
                              headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"})

        with ThreadPoolExecutor(48) as pool:
            answers = list(pool.map(send, range(96)))
        codes = [a.status_code for a in answers]
        assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
        assert all(a.headers.get("retry-after") for a in answers if a.status_code == 503)
    finally:
        serve.shutdown()
        ray.shutdown()
