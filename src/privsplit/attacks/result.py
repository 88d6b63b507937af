"""What an attack returns: a typed result that knows its figures and how to show them.

An attack's ``run`` returns an :class:`AttackResult`. Its ``record`` is the
JSON-ready dict that ``results.json`` holds under ``attacks.<name>`` (the layout
is the attack's own); every method reads the record, so a result reloaded from
an old ``results.json`` (:func:`results_of`) renders like a fresh one.
``evaluate``, ``report`` and ``benchmark`` only iterate over results: adding an
attack is one module (the attack, and its result class if the generic rendering
here is not enough), one registration and its tests.

The class facts say what the run-level figures take from a result:

* ``role = "privacy"``: its headline is the run's privacy (the attribute attack);
* ``role = "reconstruction"``: an image reconstruction, scored with the image
  metrics beside the mean training image; the run's reconstruction privacy is
  the worst case over every such result;
* ``higher_is_stronger``: whether a higher headline means the attacker did better;
* ``alarm``: the verdict that means the attack succeeded (the worst over the
  numbers of queries is reported).

:func:`privsplit.attacks.base.results_of` rebuilds the typed results of a run's
``results.json``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from ..formatting import CLOSER_IS_HIGHER, IMAGE_METRICS, at_queries, num


class AttackResult(Mapping):
    """One attack's outcome (see the module docstring). It reads as its record
    (``result["accuracy"]``), as attacks' dicts did before results were typed.

    Subclasses override what they show; this base renders any attack whose record
    has a ``headline`` number (and optionally ``chance``, ``verdict``,
    ``converged`` and ``by_queries``: ``{"1": {...}, "16": {...}}``), which is
    enough for a new attack to appear in ``report.md`` and ``benchmark.md``.
    """

    role: ClassVar[str | None] = None
    higher_is_stronger: ClassVar[bool] = True
    alarm: ClassVar[str] = "leaks"
    title: ClassVar[str] = ""  # section heading; default: the attack's name

    def __init__(self, name: str, record: dict[str, Any]) -> None:
        self.name = name
        self.record = record

    def __getitem__(self, key: str) -> Any:
        return self.record[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.record)

    def __len__(self) -> int:
        return len(self.record)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, headline={self.headline()!r}, verdict={self.verdict()!r})"

    # --- figures -----------------------------------------------------------------------------------------------

    @property
    def by_queries(self) -> dict[str, dict[str, Any]]:
        """Per number of queries (as :func:`~privsplit.queries.query_key` writes it); older results: one query."""
        return self.record.get("by_queries") or {"1": self.record}

    def distinct_queries(self) -> dict[str, dict[str, Any]]:
        """:attr:`by_queries` without those that repeat the one-query result (a
        deterministic client, or consistent randomness, computes it once)."""
        by = self.by_queries
        return {q: v for q, v in by.items() if q == "1" or v != by["1"]}

    def headline_at(self, res: dict[str, Any]) -> float | None:
        """The headline figure of one number of queries' result."""
        return res.get("headline")

    def headline(self) -> float | None:
        """The figure this attack reports (at one query)."""
        return self.headline_at(self.by_queries["1"])

    def headline_by_queries(self) -> dict[str, float | None]:
        return {q: self.headline_at(v) for q, v in self.by_queries.items()}

    def chance(self) -> float | None:
        """What an attacker without ``z`` reaches on the headline figure (None: no such level)."""
        return self.record.get("chance")

    def verdict(self) -> str:
        """The worst verdict over the numbers of queries measured: :attr:`alarm` if any reached it."""
        by = self.by_queries
        if any(v.get("verdict") == self.alarm for v in by.values()):
            return self.alarm
        return by["1"].get("verdict", "n/a")

    def not_converged(self) -> list[str]:
        """The attackers still improving at their end, as ``attacker@queries``."""
        return [f"{self.name}@{q}" for q, v in self.distinct_queries().items() if v.get("converged") is False]

    def image_metrics(self) -> dict[str, dict[str, Any]]:
        """Per number of queries, the image metrics of a reconstruction (role ``reconstruction`` only)."""
        return {}

    # --- what it shows -----------------------------------------------------------------------------------------

    def _heading(self) -> str:
        return self.title or f"`{self.name}` attack"

    def verdict_line(self, run: dict[str, Any]) -> str | None:
        """Its line in the verdicts: what it reached beside its chance level."""
        chance = f" vs chance {num(self.chance())}" if self.chance() is not None else ""
        return f"{self.name} attack: {num(self.headline())}{chance} (1 query) -> {self.verdict()}"

    def summary_lines(self, run: dict[str, Any]) -> list[str]:
        """Its lines in the terminal summary (unindented)."""
        return [f"{self.name}: " + ", ".join(f"{q}: {num(v)}" for q, v in self.headline_by_queries().items())]

    def warnings(self, run: dict[str, Any]) -> list[str]:
        """Weak-evaluation warnings: attackers that had not converged (an
        under-trained attacker overstates privacy)."""
        qs = self.distinct_queries()
        return [f"{self.name} attacker{at_queries(q, len(qs) > 1)} had not converged; rerun with more --attack-epochs"
                for q, v in qs.items() if v.get("converged") is False]

    def report_markdown(self, run: dict[str, Any]) -> list[str]:
        """Its section of ``report.md``."""
        qs = self.distinct_queries()
        md = ["", f"## {self._heading()}", "", "| queries | " + self.name + " | verdict |", "|---|---|---|"]
        md += [f"| {q} | {num(self.headline_at(v))} | {v.get('verdict', 'n/a')} |" for q, v in qs.items()]
        if self.chance() is not None:
            md += ["", f"Chance (no z): {num(self.chance())}."]
        return md

    @classmethod
    def benchmark_markdown(cls, rows: list[tuple[dict[str, Any], "AttackResult"]]) -> list[str]:
        """Its section of ``benchmark.md``: one row per method (``rows``: each
        method's run results and this attack's result)."""
        name = rows[0][1].name
        qs = list(dict.fromkeys(q for _, res in rows for q in res.distinct_queries()))
        md = [f"## {rows[0][1]._heading()}", "", "| method | " + " | ".join(f"{name}@{q}" for q in qs) + " | verdict |",
              "|---|" + "---|" * (len(qs) + 1)]
        for r, res in rows:
            by = res.by_queries
            md.append(f"| {r['name']} | " + " | ".join(num(res.headline_at(by[q])) if q in by else "n/a" for q in qs)
                      + f" | {res.verdict()} |")
        return md + [""]

    def attacker_curves(self) -> list[tuple[str, list[float]]]:
        """Test accuracy per attacker epoch, for the training-curves plot (label, values)."""
        return []


class ImageResult(AttackResult):
    """An image reconstruction scored with the image metrics beside the mean
    training image (``record["metrics"]`` at one query, ``by_queries[q]["metrics"]``,
    ``record["mean_image_baseline"]``)."""

    role = "reconstruction"
    higher_is_stronger = True  # SSIM
    alarm = "reconstructs"

    def headline_at(self, res: dict[str, Any]) -> float | None:
        return res["metrics"].get("ssim")

    def chance(self) -> float | None:
        return self.record["mean_image_baseline"].get("ssim")

    def image_metrics(self) -> dict[str, dict[str, Any]]:
        return {q: v["metrics"] for q, v in self.by_queries.items()}

    def _worst_text(self) -> str:
        qs = self.distinct_queries()
        if len(qs) < 2:
            return ""
        hits = [q for q, v in qs.items() if v["verdict"] == "reconstructs"]
        return f" (the worst over {', '.join(qs)} queries" + (f"; reconstructs at {', '.join(hits)}" if hits else "") + ")"

    def _label(self) -> str:
        return self.record.get("label") or f"{self.name} attack"

    def verdict_line(self, run: dict[str, Any]) -> str | None:
        m, b = self.record["metrics"], self.record["mean_image_baseline"]
        return (f"{self._label()}: SSIM {m['ssim']:.3f} vs mean image {b['ssim']:.3f}, PSNR {num(m['psnr'], '{:.2f}')} vs "
                f"{num(b['psnr'], '{:.2f}')} dB (1 query) -> {self.verdict()}" + self._worst_text())

    def summary_lines(self, run: dict[str, Any]) -> list[str]:
        m = self.record["metrics"]
        return [f"{self._label()}: " + ", ".join(f"{label} {num(m[k], fmt)}" for k, label, fmt in IMAGE_METRICS
                                                 if m.get(k) is not None)]

    @classmethod
    def benchmark_markdown(cls, rows: list[tuple[dict[str, Any], "AttackResult"]]) -> list[str]:
        """A table of every image metric at one query, the mean training image last."""
        first = rows[0][1]
        md = [f"## {first._heading()[0].upper() + first._heading()[1:]}", "",
              "| method | " + " | ".join(f"{label} {'↓' if CLOSER_IS_HIGHER[k] else '↑'}" for k, label, _ in IMAGE_METRICS) + " |",
              "|---|" + "---|" * len(IMAGE_METRICS)]
        table = [(r["name"], res.record["metrics"]) for r, res in rows]
        table.append(("mean training image (no z)", first.record["mean_image_baseline"]))
        for name, m in table:
            md.append(f"| {name} | " + " | ".join(num(m.get(k), fmt) for k, _, fmt in IMAGE_METRICS) + " |")
        md += ["", "MSE and L1 on the 0-255 scale, PSNR in dB; the last row is the reference an attacker must beat. "
               "ST-LPIPS is the shift-tolerant LPIPS of the stlpips-pytorch package (its own weights, not ImageNet's): "
               "not comparable to LPIPS.", ""]
        return md


def reconstruction_worst_case(results: list[AttackResult]) -> dict[str, dict[str, dict[str, Any]]]:
    """The reconstruction privacy: at each number of queries and for each image
    metric, the best value any image reconstruction attack reached, and which one
    (``{"1": {"ssim": {"value": .., "attacker": "inversion"}, ...}, ...}``); a metric no
    attack could compute is left out. Privacy is only as good as the strongest attacker."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for res in results:
        for q, metrics in res.image_metrics().items():
            for metric, higher in CLOSER_IS_HIGHER.items():
                v = metrics.get(metric)
                best = out.setdefault(q, {}).get(metric)
                if v is not None and (best is None or (v > best["value"] if higher else v < best["value"])):
                    out[q][metric] = {"value": v, "attacker": res.name}
    return out


__all__ = ["AttackResult", "ImageResult", "reconstruction_worst_case"]
