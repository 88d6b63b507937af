"""Dynamic batching (privsplit.serve.batching): concurrent real requests through the ASGI app
are answered as if each ran alone, batches really form, a bad request in a batch fails alone,
a full queue answers 503 at once, stopping answers what is queued, bad settings are one line."""

import asyncio
import re
import threading
import time

import httpx
import numpy as np
import pytest

from privsplit.cli import main
from privsplit.errors import PrivsplitError
from privsplit.serve.protocol import encode_z
from privsplit.serve.server import create_app

Z_SHAPE = (128, 2, 2)

from test_serve import HEADS, run_dir  # noqa: E402,F401 - the same tiny two-head run as the server tests


@pytest.fixture(scope="module")
def net(run_dir):
    from privsplit.serve.network import TaskNetwork

    return TaskNetwork(run_dir)


def zs(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, *Z_SHAPE)).astype(np.float32) for n in sizes]


def serve(app, job):
    """Run ``job(client)`` against ``app`` in its lifespan (the batcher starts and stops with it)."""
    async def main_():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                return await job(client)

    return asyncio.run(main_())


def post(client, z, head=None):
    return client.post("/v1/infer" + (f"?head={head}" if head else ""), content=encode_z(z))


def spy(app):
    """Record the requests of each forward pass: [[largest |z| of each request], ...]."""
    net = app.state.task_network
    calls, real = [], net.predict_many

    def predict_many(parts, head=None):
        calls.append([float(np.abs(z).max()) for z in parts])
        return real(parts, head)

    net.predict_many = predict_many
    return calls


def test_concurrent_requests_form_batches_and_match_each_alone(run_dir, net):
    app = create_app(net, max_batch=4, batch_samples=16)
    parts = zs([1, 2, 3, 1, 4, 2, 1, 1, 3, 2, 1, 2])
    heads = ["task", None, "digit", "task"] * 3  # None: the default head (task)

    async def job(client):
        replies = await asyncio.gather(*(post(client, z, h) for z, h in zip(parts, heads)))
        metrics = (await client.get("/metrics")).text
        return replies, metrics

    replies, metrics = serve(app, job)
    for z, h, r in zip(parts, heads, replies):
        assert r.status_code == 200, r.text
        want = net.predict(z, h)
        assert r.json()["head"] == want["head"] and r.json()["n"] == len(z)
        np.testing.assert_allclose([p["probabilities"] for p in r.json()["predictions"]],
                                   [p["probabilities"] for p in want["predictions"]], atol=1e-5)
    batcher = app.state.batcher
    assert batcher.requests == len(parts) and batcher.batches < len(parts), (batcher.batches, len(parts))
    assert f"privsplit_formed_batch_size_count {float(batcher.batches)}" in metrics
    assert f"privsplit_formed_batch_size_sum {float(sum(map(len, parts)))}" in metrics
    assert "privsplit_batch_size_count 12.0" in metrics  # per request, as before
    assert f"{batcher.batches} forward pass(es)" in app.state.metrics.summary()


def test_a_bad_request_fails_alone_in_its_batch(run_dir, net):
    app = create_app(net, max_batch=4)
    calls = spy(app)
    parts = zs([2, 1, 3, 2, 1])
    parts.insert(2, np.full((2, *Z_SHAPE), 3e38, np.float32))  # finite, but overflows inside the network

    async def job(client):
        return await asyncio.gather(*(post(client, z) for z in parts))

    replies = serve(app, job)
    assert replies[2].status_code == 422 and "not finite for sample(s) [0, 1]" in replies[2].json()["error"]
    assert app.state.metrics.refusals["invalid_z"] == 1
    for i, (z, r) in enumerate(zip(parts, replies)):
        if i != 2:
            assert r.status_code == 200, r.text
            np.testing.assert_allclose([p["probabilities"] for p in r.json()["predictions"]],
                                       [p["probabilities"] for p in net.predict(z)["predictions"]], atol=1e-5)
    shared = [c for c in calls if max(c) > 1e38 and len(c) > 1]
    assert shared, f"the bad request never shared a forward pass: {calls}"


def hold(app):
    """Block the batcher's worker thread until the returned event is set."""
    release = threading.Event()
    app.state.batcher._pool.submit(release.wait)
    return release


async def until(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_full_queue_answers_503_at_once_and_stopping_answers_what_is_queued(run_dir, net):
    app = create_app(net, max_batch=4, batch_samples=4, queue_samples=4, max_delay_ms=0)
    batcher = app.state.batcher
    four = zs([4, 4, 4, 4])

    async def job(client):
        release = hold(app)  # the first batch waits for the worker thread: the rest must queue
        tasks = [asyncio.create_task(post(client, z)) for z in four[:3]]
        done, _ = await asyncio.wait(tasks, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        refused = [t.result() for t in done]  # answered while the worker thread is still held
        release.set()
        return [await t for t in tasks], refused

    replies, refused = serve(app, job)
    statuses = sorted(r.status_code for r in replies)
    assert statuses.count(200) >= 1 and statuses.count(503) >= 1 and set(statuses) == {200, 503}, statuses
    assert refused and all(r.status_code == 503 for r in refused)  # at once, not after the held batch
    for r in replies:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and "at most 4" in r.json()["error"], r.text
    assert app.state.metrics.refusals["queue_full"] == statuses.count(503)

    # Stopping: what is queued is answered, what comes after is refused (503), the consumer ends.
    app = create_app(net, max_batch=4, batch_samples=4, max_delay_ms=0)
    batcher = app.state.batcher

    async def stopping():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            lifespan = app.router.lifespan_context(app)
            await lifespan.__aenter__()
            release = hold(app)
            queued = [asyncio.create_task(post(client, z)) for z in four[:3]]
            await until(lambda: batcher.queued == 8)  # one taken, two waiting
            stop = asyncio.create_task(lifespan.__aexit__(None, None, None))
            await until(lambda: batcher._stopping)
            late = await post(client, four[3])
            release.set()
            await stop
            return [await q for q in queued], late

    answered, late = asyncio.run(stopping())
    assert [r.status_code for r in answered] == [200, 200, 200]
    assert late.status_code == 503 and "stopping" in late.json()["error"]
    assert batcher._task is None and app.state.metrics.refusals["stopping"] == 1


def test_a_lone_client_does_not_wait_and_no_batching_runs_each_alone(run_dir, net):
    app = create_app(net, max_batch=4, max_delay_ms=1000)  # a batch may wait up to 1 s for more
    z = zs([3])[0]

    async def job(client):
        times = []
        for _ in range(5):
            t = time.monotonic()
            assert (await post(client, z)).status_code == 200
            times.append(time.monotonic() - t)
        return times

    assert max(serve(app, job)) < 0.5  # one request at a time: never the delay
    assert app.state.batcher.batches == 5

    app = create_app(net, max_batch=4, batching=False)
    assert app.state.batcher is None
    parts = zs([1, 2, 3, 4])

    async def alone(client):
        return await asyncio.gather(*(post(client, z) for z in parts))

    for z, r in zip(parts, serve(app, alone)):
        assert r.status_code == 200
        np.testing.assert_allclose([p["probabilities"] for p in r.json()["predictions"]],
                                   [p["probabilities"] for p in net.predict(z)["predictions"]], atol=1e-6)
    assert app.state.metrics.passes == 4


def test_bad_batching_settings_are_one_line(run_dir, net, capsys):
    for kwargs, words in [
        ({"max_delay_ms": -1}, "max_delay_ms (--max-delay) must be a number of milliseconds from 0 to 1000"),
        ({"max_delay_ms": float("nan")}, "--max-delay"),
        ({"max_delay_ms": float("inf")}, "--max-delay"),
        ({"batch_samples": 0}, "batch_samples (--batch-samples) must be an integer at least 1"),
        ({"batch_samples": 32, "queue_samples": 16}, "queue_samples (--queue-samples) must be an integer at least 64"),
        ({"max_batch": 8, "batch_samples": 4, "queue_samples": 6}, "one largest request (--max-batch)"),
    ]:
        with pytest.raises(PrivsplitError, match=re.escape(words)):
            create_app(net, **kwargs)
    for flags, words in [(["--max-delay", "-1"], "--max-delay"), (["--max-delay", "nan"], "--max-delay"),
                         (["--max-delay", "inf"], "--max-delay"), (["--batch-samples", "0"], "--batch-samples"),
                         (["--queue-samples", "10"], "--queue-samples")]:
        assert main(["serve", str(run_dir), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (flags, err)
