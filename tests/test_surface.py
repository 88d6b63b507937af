"""The library surface: a run trained on a user's own model parts is loaded, evaluated, exported and
served with those parts; the trainer's callbacks see the trainer at every event."""

import httpx
import numpy as np
import pytest
import torch
from torch import nn

import privsplit
from privsplit.errors import CheckpointError
from privsplit.train.engine import Callback


class UniformNoiseClient(privsplit.ClientPart):
    """A user's own client part whose randomness is an input (``u``), so an export is deterministic."""

    def __init__(self):
        super().__init__()
        self.image_shape, self.z_shape = (3, 16, 16), (4, 4, 4)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.ReLU())

    @property
    def random_ops(self):
        return ("noise",)

    @property
    def draws(self):
        return 64

    def encode(self, x):
        return self.net(x)

    def reduce(self, e, u=None):
        u = torch.rand(e.shape[0], 64, device=e.device) if u is None else u
        return e + 0.2 * (u.view_as(e) - 0.5)

    def reduce_silenced(self, e):
        return e


def squares(n, seed):
    """Bright or dark squares in one of four corners: utility = brightness, private = corner."""
    g = torch.Generator().manual_seed(seed)
    where, bright = torch.randint(0, 4, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
    x = torch.zeros(n, 3, 16, 16, dtype=torch.uint8)
    for i, (w, b) in enumerate(zip(where.tolist(), bright.tolist())):
        x[i, :, 8 * (w // 2):8 * (w // 2) + 8, 8 * (w % 2):8 * (w % 2) + 8] = 80 + 150 * b
    return privsplit.LabeledImages({"utility": bright, "private": where}, images=x)


INFO = privsplit.TaskInfo("squares", {"utility": ["dark", "bright"], "private": ["tl", "tr", "bl", "br"]}, (3, 16, 16))


def users_model():
    return privsplit.SplitModel(UniformNoiseClient(), {"task": nn.Sequential(nn.Flatten(), nn.Linear(64, 2))},
                                {"task": "utility"})


@pytest.fixture(scope="module")
def users_run(tmp_path_factory):
    torch.manual_seed(0)
    data = (squares(256, 0), squares(64, 1), INFO)
    cfg = privsplit.apply_overrides(privsplit.Config(), ["train.epochs=20", "train.batch_size=32", "reduction=[]",
                                                         "train.lr_obfuscator=0.01", "train.lr_head=0.01"])
    run = tmp_path_factory.mktemp("surface") / "run"
    trained = users_model()
    privsplit.Trainer(cfg, run, progress=False, log=lambda s: None, data=data, model=trained).fit()
    return run, data, trained.cpu()


@pytest.mark.slow
def test_a_run_of_a_users_own_model_loads_evaluates_exports_and_serves(users_run, tmp_path):
    import onnxruntime as ort

    from privsplit.serve.server import BackgroundServer, TaskNetwork, create_app
    from privsplit.serve.protocol import encode_z

    run_dir, data, trained = users_run
    run = privsplit.load_run(run_dir, model=users_model())
    assert isinstance(run.model.obfuscator, UniformNoiseClient)
    for a, b in zip(run.model.state_dict().values(), trained.state_dict().values()):
        assert torch.equal(a, b)

    options = privsplit.EvalOptions(model=users_model(), data=data, attacks=("attribute",), latency_repeats=0,
                                    attack=privsplit.AttackOptions(epochs=1, families=("mlp",), queries=(1,)),
                                    log=lambda s: None, progress=False)
    results = privsplit.evaluate_run(run_dir, options, tmp_path / "eval")
    assert results["utility"] > 0.8 and 0 <= results["privacy"] <= 1, (results["utility"], results["privacy"])
    assert (tmp_path / "eval" / "results.json").is_file()

    path = privsplit.export_obfuscator(run_dir, "onnx", tmp_path / "export", model=users_model())
    x, u = torch.rand(3, 3, 16, 16), torch.rand(3, 64)
    got = ort.InferenceSession(str(path)).run(["z"], {"image": x.numpy(), "draws": u.numpy()})[0]
    with torch.no_grad():
        want = trained.obfuscator(x, u).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    net = TaskNetwork(run_dir, model=users_model())
    with BackgroundServer(create_app(net)) as srv:
        answer = httpx.post(f"{srv.url}/v1/infer", content=encode_z(want)).json()
    with torch.no_grad():
        probs = trained.heads["task"](torch.from_numpy(want)).softmax(1).numpy()
    assert answer["n"] == 3 and [p["label"] for p in answer["predictions"]] == [["dark", "bright"][i] for i in probs.argmax(1)]
    np.testing.assert_allclose([p["probabilities"] for p in answer["predictions"]], probs, rtol=1e-5, atol=1e-6)


def test_a_users_model_run_without_its_model_is_a_one_line_error(users_run):
    from privsplit.serve.server import TaskNetwork

    run_dir, _, _ = users_run
    want = r"trained on your own model parts \(UniformNoiseClient\).*pass them.*model="
    with pytest.raises(CheckpointError, match=want):
        privsplit.load_run(run_dir)
    with pytest.raises(CheckpointError, match=want):
        privsplit.export_obfuscator(run_dir, "onnx")
    with pytest.raises(CheckpointError, match=want):
        TaskNetwork(run_dir)
    with pytest.raises(TypeError, match="model must be a privsplit SplitModel.*not Linear"):
        privsplit.load_run(run_dir, model=nn.Linear(2, 2))


def test_a_users_model_that_does_not_match_the_weights_names_the_file(users_run):
    from privsplit.serve.server import TaskNetwork

    run_dir, _, _ = users_run
    other = privsplit.SplitModel(UniformNoiseClient(), {"task": nn.Sequential(nn.Flatten(), nn.Linear(64, 3))},
                                 {"task": "utility"})
    with pytest.raises(CheckpointError, match=r"heads\.safetensors does not match this model"):
        privsplit.load_run(run_dir, model=other)
    with pytest.raises(CheckpointError, match=r"heads\.safetensors does not match this model"):
        TaskNetwork(run_dir, model={"task": nn.Linear(64, 2)})
    run = privsplit.load_run(run_dir, parts=("obfuscator",), model=other)  # the heads are not read
    assert run.model.heads["task"][1].out_features == 3


class Recorder(Callback):
    """Every event, with the epoch the context states and the optimisers it reaches."""

    def __init__(self):
        self.events = []

    def on_fit_start(self, ctx):
        self.events.append(("fit_start", ctx.epoch, sorted(ctx.optimizers)))
        assert ctx.trainer.optimizers is ctx.optimizers

    def on_epoch_start(self, ctx):
        self.events.append(("epoch_start", ctx.epoch))

    def on_step_end(self, ctx, losses):
        if not self.events or self.events[-1][0] != "step_end":  # one entry per run of steps
            self.events.append(("step_end", ctx.epoch))

    def on_epoch_end(self, ctx):
        self.events.append(("epoch_end", ctx.epoch, ctx.metrics["epoch"]))

    def on_fit_end(self, ctx, result):
        self.events.append(("fit_end", ctx.epoch, result["epoch"]))


@pytest.mark.slow
def test_callbacks_see_every_event_in_order_and_the_optimizers(tiny, tmp_path):
    run = tmp_path / "run"
    first = Recorder()
    privsplit.Trainer(tiny("train.epochs=2"), run, progress=False, log=lambda s: None, callbacks=[first]).fit()
    optimizers = ["heads", "obfuscator"]  # the default config trains no proxy adversary
    assert first.events == [("fit_start", 0, optimizers),
                            ("epoch_start", 1), ("step_end", 1), ("epoch_end", 1, 1),
                            ("epoch_start", 2), ("step_end", 2), ("epoch_end", 2, 2),
                            ("fit_end", 2, 2)]
    resumed = Recorder()
    privsplit.Trainer(tiny("train.epochs=3"), run, resume=True, progress=False, log=lambda s: None,
                      callbacks=[resumed]).fit()
    assert resumed.events == [("fit_start", 2, optimizers), ("epoch_start", 3), ("step_end", 3),
                              ("epoch_end", 3, 3), ("fit_end", 3, 3)]


def test_a_callback_with_only_some_hooks_still_works(tiny, tmp_path):
    """An old callback (any object with ``on_epoch_end``) keeps working: missing hooks are skipped."""

    class OnlyEpochEnd:
        def __init__(self):
            self.epochs = []

        def on_epoch_end(self, ctx):
            self.epochs.append(ctx.epoch)

    cb = OnlyEpochEnd()
    privsplit.Trainer(tiny(), tmp_path / "run", progress=False, log=lambda s: None, callbacks=[cb]).fit()
    assert cb.epochs == [1]
