"""Magnitude pruning, the planner's backend vs Torch-Pruning's group magnitude, on the same plan.

MiniLM + BBC News (the fitted head of the dense encoder), one uniform 2x shape: 5 of 12 heads and
704 of 1536 neurons in every layer. The planner's magnitude backend (group L2 mass of every weight a
head / neuron owns) picks which heads and neurons to keep and cuts the model; the plan is exported
with ``planner export --to torch-pruning`` and the generated snippet, unchanged, cuts a fresh copy
with ``tp.importance.GroupMagnitudeImportance``. Both are evaluated on the held-out 20% (444
articles); the per-layer counts of both are checked against the plan.

Last line: ``planner_magnitude_acc=<%> torch_pruning_acc=<%> dense_acc=<%>``.

Run: ``.venv/bin/python benchmarks/magnitude_bench.py``
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from planner.backends import get_backend
from planner.config import DEFAULT_CACHE, RunConfig
from planner.models import load_model
from planner.report.exports import export_plan
from planner.stages.solve import solve_plan
from planner.tasks import build_task
from planner.workflows import profile_table


def main() -> None:
    loaded = load_model("minilm")
    adapter = loaded.adapter
    task = build_task(
        loaded, data="bbc", seq_len=128, calibration_size=64, batch_size=32, seed=0, cache_dir=DEFAULT_CACHE
    )
    backend = get_backend("magnitude")
    levels = [7 if u.kind == "attention" else 13 for u in adapter.units()]  # 5 heads, 704 neurons
    with tempfile.TemporaryDirectory() as tmp:  # any table of this model will do: the levels are given
        table = profile_table(RunConfig(batch_size=4, seq_len=32, rounds=1), out=Path(tmp) / "t.csv", progress=False)
    plan = solve_plan(
        loaded=loaded,
        table=table,
        scores=backend.score(adapter, None),
        backend=backend,
        speedup=1.01,
        levels=levels,
    )
    assert {c.kept for c in plan.units} == {5, 704}
    dense = task.evaluate(loaded.model).value
    ours = task.evaluate(backend.apply(adapter, plan, None)).value
    with tempfile.TemporaryDirectory() as tmp:
        export_plan(plan, "torch-pruning", Path(tmp) / "tp.json")
        namespace: dict[str, object] = {}
        exec(compile((Path(tmp) / "tp.py").read_text(), "tp.py", "exec"), namespace)
        fresh = load_model("minilm").model
        example = adapter.example_inputs(2, 16)
        pruned = namespace["prune"](  # type: ignore[operator]
            fresh,
            example,
            str(Path(tmp) / "tp.json"),
            forward_fn=lambda m, x: m(input_ids=x[0], attention_mask=x[1])[0],
        )
    for unit, choice in zip(adapter.units(), plan.units, strict=True):
        module = pruned.get_submodule(unit.modules["query" if unit.kind == "attention" else "up"])
        count = module.out_features // (adapter.head_size if unit.kind == "attention" else 1)
        assert count == choice.kept, (unit.name, count, choice.kept)
    theirs = task.evaluate(pruned).value
    print(f"uniform 2x shape (5/12 heads, 704/1536 neurons), {task.test.input_ids.shape[0]} test articles")
    print(f"dense {100 * dense:.2f}% | planner magnitude {100 * ours:.2f}% | Torch-Pruning {100 * theirs:.2f}%")
    print(f"planner_magnitude_acc={100 * ours:.2f} torch_pruning_acc={100 * theirs:.2f} dense_acc={100 * dense:.2f}")


if __name__ == "__main__":
    main()
