"""Typed attack results: a new attack is one class and one registration.

The toy attack here (a nearest-centroid guess of the private label from ``z``) is
defined only in this test. It touches neither report.py nor benchmark.py, yet it
shows up in results.json, report.md, the terminal summary and benchmark.md, because
those iterate over results instead of naming attacks.
"""

import json
from typing import Any

import pytest
import torch

from conftest import TINY
from privsplit.attacks import ATTACKS, Attack, AttackOptions, EvalData
from privsplit.attacks.base import per_query, privacy_result, results_of
from privsplit.attacks.result import AttackResult
from privsplit.cli import main
from privsplit.evaluate import EvalOptions, evaluate_run
from privsplit.metrics.accuracy import chance_level
from privsplit import report


class CentroidAttack(Attack):
    """Guess the private label as the class whose mean training ``z`` is nearest."""

    def run(self, data: EvalData, options: AttackOptions) -> AttackResult:
        y_train, y_test = data.y_train[options.target], data.y_test[options.target]
        chance = chance_level(y_test)

        def at(q):  # noqa: ANN001, ANN202
            z_train, z_test = data.z_train_fixed(q).flatten(1), data.z_test(q).flatten(1)
            classes = torch.unique(y_train)
            centroids = torch.stack([z_train[y_train == c].mean(0) for c in classes])
            guess = classes[torch.cdist(z_test, centroids).argmin(1)]
            acc = (guess == y_test).float().mean().item()
            return {"headline": acc, "verdict": "leaks" if acc > chance + 0.05 else "at chance", "converged": True}

        by_queries = per_query(data, options, at)
        return AttackResult(self.name, {"chance": chance, "by_queries": by_queries, **by_queries["1"]})


@pytest.fixture(scope="module")
def toy():
    ATTACKS.register("centroid")(CentroidAttack)
    yield CentroidAttack
    del ATTACKS._entries["centroid"]  # the registry has no public removal: one test-only attack


@pytest.fixture(scope="module")
def evaluated(toy, tmp_path_factory):
    run = tmp_path_factory.mktemp("toyrun") / "run"
    assert main(["train", "--out", str(run), "--no-progress", *(a for s in TINY for a in ("--set", s))]) == 0
    out = run / "eval"
    options = EvalOptions(attacks=("attribute", "centroid"), attack=AttackOptions(epochs=2, families=("linear",)),
                          latency_repeats=0, progress=False, log=lambda s: None)
    return evaluate_run(run, options), out


@pytest.mark.slow
def test_a_new_attack_appears_everywhere_without_touching_the_report(evaluated):
    r, out = evaluated
    saved = json.loads((out / "results.json").read_text())
    toy = saved["attacks"]["centroid"]
    assert set(toy["by_queries"]) == {"1", "16", "inf"} and 0 <= toy["headline"] <= 1
    md = (out / "report.md").read_text()
    assert "## `centroid` attack" in md and f"centroid attack: {toy['headline']:.4f}" in md
    assert any(line.startswith("  centroid: 1: ") for line in report.summary_lines(saved))
    # The run's privacy is still the attribute attack's: the toy declares no role.
    assert saved["privacy"] == saved["attacks"]["attribute"]["accuracy"]
    assert [res.name for res in results_of(saved)] == ["attribute", "centroid"]
    bench = report.benchmark_markdown([saved], {"dataset": "digits", "budget": "test", "data": {"train": 96},
                                                "settings": {"epochs": 1, "attack_epochs": 2, "families": ["linear"]}},
                                      {saved["name"]: 1.0})
    assert "## Privacy and utility (digits)" in bench and "## `centroid` attack" in bench
    # its verdict there is the worst over the numbers of queries
    worst = "leaks" if any(v["verdict"] == "leaks" for v in toy["by_queries"].values()) else toy["verdict"]
    assert any(line.startswith(f"| {saved['name']} | {toy['headline']:.4f} |") and line.endswith(f"| {worst} |")
               for line in bench.splitlines())


@pytest.mark.slow
def test_results_read_back_from_json_are_the_same_typed_results(evaluated):
    r, out = evaluated
    saved = json.loads((out / "results.json").read_text())
    res = privacy_result(saved)
    assert type(res).__name__ == "AttributeResult" and res.role == "privacy"
    assert res.headline() == saved["privacy"] and res.chance() == saved["privacy_chance"]
    assert res.headline_by_queries() == saved["privacy_by_queries"]
    assert res.verdict() in ("leaks", "at chance")
    # A result reads as its record, as attacks' dicts did.
    assert res["accuracy"] == res.record["accuracy"] and dict(res) == res.record


def test_results_of_an_attack_unknown_here_render_generically():
    saved: dict[str, Any] = {"attacks": {"from_the_future": {"headline": 0.5, "chance": 0.1, "verdict": "leaks"}}}
    (res,) = results_of(saved)
    assert type(res) is AttackResult and res.verdict() == "leaks"
    assert "from_the_future attack: 0.5000 vs chance 0.1000 (1 query) -> leaks" in report.verdict_lines(saved)


def test_image_metrics_say_which_way_is_closer_and_the_decoder_convergence_is_not_negated():
    from privsplit.attacks.base import attacker_converged

    # Test MSE still falling at the last epoch with the loss falling: not converged.
    assert not attacker_converged([1.0, 0.5, 0.2], [0.3, 0.2, 0.1], 0.01, fitted=0.0, higher_is_better=False)
    # Test MSE lowest earlier (overfitting): converged, whatever the loss does.
    assert attacker_converged([1.0, 0.5, 0.2], [0.1, 0.2, 0.3], 0.01, fitted=0.0, higher_is_better=False)
