"""The functions behind ``planner plan`` and ``planner apply`` (the CLI only parses arguments).

Plan for a device you are not on: ``planner profile`` on the target writes a table; ``create_plan``
anywhere turns it into a plan (error scores computed locally); ``apply_plan`` on the target cuts the
model for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from planner.backends import Calibration, get_backend
from planner.errors import PlannerError
from planner.models import LoadedModel, load_model
from planner.plan import Plan
from planner.planning import make_plan
from planner.pruned_io import save_pruned
from profilers import LatencyTable


@dataclass(frozen=True)
class ScoringSetup:
    """What a backend needs beyond the model: calibration data (None for magnitude)."""

    calibration: Calibration | None
    classifier: nn.Module | None


def _scoring_setup(
    loaded: LoadedModel, backend: str, *, data: str | None, seq_len: int, calibration_size: int, seed: int
) -> ScoringSetup:
    if backend != "fisher":
        return ScoringSetup(None, None)  # magnitude pruning needs no data
    if data is None:
        raise PlannerError(
            "the Fisher backend needs labelled data for its task loss: pass --data bbc (bundled) or a folder "
            "of <class>/*.txt files, or use --backend magnitude."
        )
    from planner.task import build_task

    task = build_task(loaded, data=data, seq_len=seq_len, calibration_size=calibration_size, seed=seed)
    return ScoringSetup(task.calibration, task.classifier)


def load_for_table(model: str, table: LatencyTable) -> LoadedModel:
    """Load ``model`` with the level grid the table was measured on (FFN step, sparsity levels)."""
    frame = table.frame
    ffn = frame[frame["kind"] == "ffn"]
    ffn_step = None
    if not ffn.empty:
        first = ffn[ffn["unit"] == ffn["unit"].iloc[0]].sort_values("level")["kept"].to_numpy()
        ffn_step = int(first[0] - first[1]) if first.size > 2 else int(first[0]) or None
    sparse = frame[frame["structure"] == "unstructured"]
    sparsity_levels = int(sparse.groupby("unit").size().iloc[0]) if not sparse.empty else None
    return load_model(
        model,
        batch_size=table.meta.batch_size,
        seq_len=table.meta.seq_len,
        ffn_step=ffn_step,
        sparsity_levels=sparsity_levels,
    )


def create_plan(
    *,
    model: str,
    table: str | Path,
    speedup: float,
    backend: str = "fisher",
    solver: str = "dp",
    data: str | None = "bbc",
    calibration_size: int = 256,
    seed: int = 0,
    force_table: bool = False,
    out: str | Path | None = None,
) -> Plan:
    """Make a plan from a latency table (measured on the target) and locally computed error scores."""
    latency = LatencyTable.load(table)
    loaded = load_for_table(model, latency)
    pruner = get_backend(backend)
    setup = _scoring_setup(
        loaded, backend, data=data, seq_len=latency.meta.seq_len, calibration_size=calibration_size, seed=seed
    )
    scores = pruner.score(loaded.adapter, setup.calibration)
    plan = make_plan(
        loaded=loaded,
        table=latency,
        scores=scores,
        backend=pruner,
        speedup=speedup,
        solver=solver,
        seed=seed,
        force_table=force_table,
    )
    if out is not None:
        plan.save(out)
    return plan


def apply_plan(
    *,
    model: str,
    plan: str | Path,
    out: str | Path,
    data: str | None = "bbc",
    calibration_size: int = 256,
    seed: int = 0,
    overwrite: bool = False,
    onnx: bool = False,
) -> Path:
    """Cut ``model`` as ``plan`` says and save it to ``out`` (safetensors + pruned_config.json).

    Fisher plans are tuned on ``data`` and saved as the task's classifier (pruned encoder + head);
    magnitude plans need no data and save the pruned model itself.
    """
    out_dir = Path(out)
    if out_dir.exists() and not overwrite:
        raise PlannerError(f"{out_dir} already exists; choose another --out or pass --overwrite.")
    probe = Plan.load(plan)
    loaded = load_model(
        model, batch_size=int(probe.table.get("batch_size", 32)), seq_len=int(probe.table.get("seq_len", 128))
    )
    chosen = Plan.load(plan, expected_fingerprint=loaded.fingerprint)
    pruner = get_backend(chosen.backend)
    seq_len = int(chosen.table.get("seq_len", 128))
    setup = _scoring_setup(
        loaded, chosen.backend, data=data, seq_len=seq_len, calibration_size=calibration_size, seed=seed
    )
    pruned = pruner.apply(loaded.adapter, chosen, setup.calibration)
    if setup.classifier is not None and loaded.adapter.architecture == "bert":
        from planner.classifier import MeanPoolClassifier
        from planner.models.bert import find_bert

        head = getattr(setup.classifier, "head", None)
        if isinstance(head, nn.Linear):
            pruned = MeanPoolClassifier(find_bert(pruned)[0], head).eval()
    if loaded.adapter.architecture != "bert":
        raise PlannerError(
            "saving pruned generic models is not supported yet; use the Python API "
            "(planner.backends.magnitude.apply_weight_sparsity) or export the plan to another pruner."
        )
    target = save_pruned(pruned, out_dir, plan=chosen, overwrite=overwrite)
    if onnx:
        from planner.pruned_io import export_onnx_model

        example = loaded.adapter.example_inputs(int(chosen.table.get("batch_size", 1)), seq_len)
        export_onnx_model(pruned, example, target / "model.onnx")
    return target
