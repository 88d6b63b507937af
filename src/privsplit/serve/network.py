"""The task network: the heads of a finished run, loaded from the run folder
alone (never the obfuscator), checked once at start, answering for batches of ``z``."""

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import PrivsplitError
from ..rundir import RunDir
from .protocol import WireFormatError, run_identity


class TaskNetwork:
    """The heads of a finished run, ready to answer for batches of ``z``.

    Only ``heads.safetensors`` is loaded (safetensors: no code runs on load).

    Args:
        run_dir: a finished run folder.
        device: where the heads run.
        model: a run trained on a user's own model parts: the
            :class:`~privsplit.methods.SplitModel` (or just its heads, by name)
            to load the weights into, instead of rebuilding the heads from the config.
    """

    def __init__(self, run_dir: str | Path, device: str = "cpu", model: Any = None) -> None:
        from ..config import load_config
        from ..data.base import TaskInfo
        from ..methods import SplitModel, build_method
        from ..run import check_model_given
        from ..weights import load_weights, read_weights

        rd = RunDir(run_dir)
        self.run_dir = rd.path
        self.identity = run_identity(rd.path)
        if isinstance(model, SplitModel):
            heads = model.heads
        elif isinstance(model, (Mapping, nn.ModuleDict)):
            heads = nn.ModuleDict(model)
        else:
            check_model_given(rd.read_record(), rd, model)  # a clear error for anything else
            # The heads are rebuilt from the config alone: the method knows its
            # server-side network (the backbone's rest for a cut, a whole ResNet18 for
            # the image-level baselines, an MLP for maxent). The obfuscator is never
            # built or read here.
            cfg = load_config(rd.config)
            method = build_method(cfg)
            info = TaskInfo(cfg.data.name, {h["target"]: h["labels"] for h in self.identity["heads"]},
                            tuple(self.identity["image_shape"]))
            heads = nn.ModuleDict(
                {h["name"]: method.server_head(info, len(h["labels"])) for h in self.identity["heads"]}
            )
        weights = rd.weights("heads")
        load_weights(heads, read_weights(weights, rd.recorded_digest("heads")), str(weights))
        self.heads = heads.to(device).eval()
        self.device = torch.device(device)
        self.z_shape = tuple(self.identity["z_shape"])
        self.info = {h["name"]: h for h in self.identity["heads"]}
        self.default_head = self.identity["heads"][0]["name"]
        self._dry_run(rd.record)

    @torch.inference_mode()
    def _dry_run(self, record: Path) -> None:
        """One forward of a zero ``z`` through every head: ``run.json`` states the
        shape clients will send, and a shape the heads cannot take (an edited or
        damaged ``run.json``) must stop the server at start, not answer 500 later."""
        shape = self.z_shape
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 16 for d in shape) \
                or math.prod(shape) > 1 << 26:
            raise PrivsplitError(f"{record} states z_shape {list(shape)}, which is no representation shape: "
                                 "the run folder is damaged; restore run.json or train again")
        z = torch.zeros(1, *shape, device=self.device)
        for name, head in self.heads.items():
            classes = len(self.info[name]["labels"])
            try:
                out = head(z)
                problem = None if tuple(out.shape) == (1, classes) else f"it gives {tuple(out.shape)}, not (1, {classes})"
            except Exception as e:  # noqa: BLE001 - any failure means the stated shape is wrong; say so in one line
                problem = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            if problem:
                raise PrivsplitError(
                    f"{record} states z_shape {list(shape)}, but head {name!r} cannot take it ({problem}): "
                    "run.json was edited or belongs to another run; restore it or train again"
                )

    def predict(self, z: np.ndarray, head: str | None = None) -> dict[str, Any]:
        """Probabilities of head ``head`` (default: the first) for ``z`` (N, *z_shape).

        Raises:
            WireFormatError: status 422 when the network's output is not finite
                (finite but huge values of ``z`` overflow inside the network).
        """
        answer = self.predict_many([z], head)[0]
        if isinstance(answer, WireFormatError):
            raise answer
        return answer

    @torch.inference_mode()
    def predict_many(self, zs: Sequence[np.ndarray], head: str | None = None) -> list[dict[str, Any] | WireFormatError]:
        """:meth:`predict` for several requests in one forward pass (dynamic batching).

        One answer per array in ``zs``: its own rows, or the :class:`WireFormatError` that
        :meth:`predict` would raise for it alone. Each sample runs through the heads on its
        own (eval mode: no statistics across the batch), so one request whose output is not
        finite fails alone, never the others in its batch.
        """
        name = head or self.default_head
        # (sum of N_i, *z_shape); float16 is widened here
        x = torch.from_numpy(np.concatenate([np.asarray(z, dtype=np.float32) for z in zs])).to(self.device)
        logits = self.heads[name](x).float()
        probs = logits.softmax(1)
        finite = (logits.isfinite().all(1) & probs.isfinite().all(1)).cpu().numpy()
        probs = probs.cpu().numpy()  # (sum of N_i, classes)
        answers: list[dict[str, Any] | WireFormatError] = []
        start = 0
        for z in zs:
            rows = slice(start, start + len(z))
            start += len(z)
            answers.append(self._answer(name, z, probs[rows], finite[rows]))
        return answers

    def _answer(self, name: str, z: np.ndarray, probs: np.ndarray, finite: np.ndarray) -> dict[str, Any] | WireFormatError:
        """One request's answer from its rows of the output (``probs`` (N, classes))."""
        if not finite.all():
            rows = np.flatnonzero(~finite).tolist()
            return WireFormatError(
                f"the network's output is not finite for sample(s) {rows[:10]}{' ...' if len(rows) > 10 else ''}: "
                f"z holds values far outside what the obfuscator produces (largest |z| {float(np.abs(z).max()):.3g})",
                422,
            )
        labels = self.info[name]["labels"]
        preds = []
        for p in probs:
            i = int(p.argmax())
            preds.append({"index": i, "label": labels[i], "probability": float(p[i]), "probabilities": p.tolist()})
        return {"head": name, "target": self.info[name]["target"], "labels": labels, "n": len(preds), "predictions": preds}
