"""The functions behind ``planner profile``, ``plan``, ``apply`` and ``verify`` (the CLI only parses
arguments into a ``RunConfig``). They compose the same stage functions as ``planner run``.

Plan for a device you are not on: ``profile_table`` on the target writes a table; ``create_plan``
anywhere turns it into a plan (error scores computed locally); ``apply_plan`` on the target cuts the
model for real; ``verify_pruned`` measures it there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from planner.backends import get_backend
from planner.config import RunConfig
from planner.errors import PlannerError
from planner.models import LoadedModel
from planner.records.headroom import Headroom
from planner.records.plan import Plan
from planner.records.verification import Verification
from planner.stages.apply import base_config
from planner.stages.apply.choose import applied_plan, apply_best
from planner.stages.load import configured_task, load_configured
from planner.stages.profile.headroom import measure_headroom
from planner.stages.profile.measure import profile_model
from planner.stages.recover import RecoveryLog
from planner.stages.score import score_units
from planner.stages.solve import solve_plan
from planner.stages.verify import verify_models
from planner.tasks import Task
from profilers import LatencyTable


def profile_table(config: RunConfig, *, out: str | Path, progress: bool = True, reuse: bool = True) -> LatencyTable:
    """``planner profile``: measure the model's latency table on this device and write ``out``."""
    return _profile(config, load_configured(config), out=out, progress=progress, reuse=reuse)


def _profile(config: RunConfig, loaded: LoadedModel, *, out: str | Path, progress: bool, reuse: bool) -> LatencyTable:
    return profile_model(
        loaded, config.measurement(), smoothing=config.smoothing, out=out, progress=progress, reuse=reuse
    )


def profile_with_headroom(
    config: RunConfig, *, out: str | Path, progress: bool = True, reuse: bool = True
) -> tuple[LatencyTable, Headroom | None]:
    """``planner profile``: the table (``profile_table``) and the runtime headroom of the same loaded model."""
    loaded = load_configured(config)
    table = _profile(config, loaded, out=out, progress=progress, reuse=reuse)
    return table, measure_headroom(loaded, config.measurement())


def planned_config(config: RunConfig, table: Mapping[str, Any]) -> RunConfig:
    """``config`` at the shape and level grid a plan's table records (``plan.table``)."""
    return config.replace(
        batch_size=int(table.get("batch_size", config.batch_size)),
        seq_len=int(table.get("seq_len", config.seq_len)),
        ffn_step=table.get("ffn_step"),
        sparsity_levels=table.get("sparsity_levels"),
    )


def load_for_table(config: RunConfig, table: LatencyTable) -> LoadedModel:
    """Load the configured model with the level grid and shape the table records."""
    m = table.meta
    grid = config.replace(
        batch_size=m.batch_size, seq_len=m.seq_len, ffn_step=m.ffn_step, sparsity_levels=m.sparsity_levels
    )
    return load_configured(grid)


def _task_for(config: RunConfig, loaded: LoadedModel, *, needs_task: bool, seq_len: int) -> Task | None:
    """The task a backend scores or tunes on (None when the backend needs no data)."""
    return configured_task(config, loaded, seq_len=seq_len) if needs_task else None


def create_plan(
    config: RunConfig, *, table: str | Path, force_table: bool = False, out: str | Path | None = None
) -> Plan:
    """``planner plan``: a plan from a latency table (measured on the target) and locally computed
    error scores (``config``: model, backend, solver, speedup, data, calibration size, seed)."""
    latency = LatencyTable.load(table)
    loaded = load_for_table(config, latency)
    backend = get_backend(config.backend)
    task = _task_for(config, loaded, needs_task=backend.needs_task, seq_len=latency.meta.seq_len)
    scores = score_units(backend, loaded, task)
    plan = solve_plan(
        loaded=loaded,
        table=latency,
        scores=scores,
        backend=backend,
        speedup=config.speedup,
        solver=config.solver,
        seed=config.seed,
        force_table=force_table,
    )
    if out is not None:
        plan.save(out)
    return plan


def apply_plan(
    config: RunConfig,
    *,
    plan: str | Path,
    out: str | Path,
    overwrite: bool = False,
    onnx: bool = False,
    gguf: str | None = None,
) -> Path:
    """``planner apply``: cut ``config.model`` as ``plan`` says and save it to ``out``.

    Backends that need data (Fisher's mask tuning) use ``config.data``; a fitted-head classifier is
    saved with its head. ``gguf`` (a weight type: f32, f16, q8_0) also writes ``model.gguf`` for
    llama.cpp, kept only once llama.cpp ran it as torch does (``gguf_check.json``).
    """
    from planner.stages.apply.gguf_check import export_checked_gguf, held_out_windows, refuse_gguf_early
    from planner.stages.apply.pruned_io import export_onnx_model, save_pruned

    out_dir = Path(out)
    if out_dir.exists() and not overwrite:
        raise PlannerError(f"{out_dir} already exists; choose another --out or pass --overwrite.")
    probe = Plan.load(plan)
    planned = planned_config(config, probe.table)
    loaded = load_configured(planned)
    chosen = Plan.load(plan, expected_fingerprint=loaded.fingerprint)
    if not getattr(loaded.adapter, "supports_shrinking", False):
        raise PlannerError(
            "saving pruned generic models is not supported yet; use the Python API "
            "(planner.backends.magnitude.apply_weight_sparsity) or export the plan to another pruner."
        )
    if gguf is not None:
        refuse_gguf_early(loaded.spec, loaded.adapter.model, loaded.source)
    backend = get_backend(chosen.backend)
    seq_len = planned.seq_len
    task = _task_for(config, loaded, needs_task=backend.needs_task or gguf is not None, seq_len=seq_len)
    pruned, choice = apply_best(backend, loaded.adapter, chosen, task)
    chosen = applied_plan(chosen, choice)
    deployable: nn.Module = pruned if task is None else task.deployable(pruned)
    shrunk = loaded.adapter.kept_shape(pruned)
    target = save_pruned(
        deployable, out_dir, plan=chosen, shape=shrunk, base_config=base_config(loaded), overwrite=overwrite
    )
    if onnx:
        example = loaded.adapter.example_inputs(planned.batch_size, seq_len)
        export_onnx_model(deployable, example, target / "model.onnx", input_names=("input_ids", "attention_mask"))
    if gguf is not None and task is not None:
        check = export_checked_gguf(
            deployable,
            target,
            weight_type=gguf,
            spec=loaded.spec,
            tokenizer_folder=loaded.source,
            windows=held_out_windows(task),
        )
        print(check.text())
    return target


def gguf_preflight(config: RunConfig) -> LoadedModel:
    """Refuse ``--gguf`` before any work when llama.cpp is missing or the model cannot be written."""
    from planner.stages.apply.gguf_check import refuse_gguf_early

    loaded = load_configured(config)
    refuse_gguf_early(loaded.spec, loaded.adapter.model, loaded.source)
    return loaded


def export_run_gguf(config: RunConfig, pruned_dir: str | Path, weight_type: str) -> str:
    """``planner run --gguf``: write ``pruned_dir/model.gguf`` from the saved pruned model, checked in
    llama.cpp on the run's held-out windows; returns the check's line."""
    from planner.stages.apply.gguf_check import export_checked_gguf, held_out_windows
    from planner.stages.apply.pruned_io import load_pruned

    folder = Path(pruned_dir)
    loaded = load_configured(config)
    task = configured_task(config, loaded)
    check = export_checked_gguf(
        load_pruned(folder),
        folder,
        weight_type=weight_type,
        spec=loaded.spec,
        tokenizer_folder=loaded.source,
        windows=held_out_windows(task),
    )
    return check.text()


def verification_config(config: RunConfig, table: dict[str, object], *, allow_mode_mismatch: bool = False) -> RunConfig:
    """``config`` with the execution mode a plan's table was measured in (``--execution auto``), or
    ``config`` unchanged when it names that mode; a different mode is refused unless allowed: a
    speedup measured eagerly says nothing about a plan made for CUDA graphs, and the reverse."""
    planned = str(table.get("execution", "eager"))
    if config.execution == "auto":
        if planned == "cuda-graphs" and config.device != "cuda":
            raise PlannerError(
                "this plan was timed as CUDA graphs on a GPU; verify it with --device cuda (or pass --execution "
                "eager --allow-mode-mismatch to measure it eagerly here, which does not check its promise)."
            )
        return config.replace(execution=planned)
    if config.execution != planned and not allow_mode_mismatch:
        raise PlannerError(
            f"this plan's table was measured with --execution {planned}, but --execution {config.execution} was "
            f"asked for; verify in the mode it was planned for (--execution {planned}), or pass "
            "--allow-mode-mismatch to measure it anyway."
        )
    return config


def verify_pruned(
    config: RunConfig, *, pruned: str | Path, shape_from_plan: bool = True, allow_mode_mismatch: bool = False
) -> Verification:
    """``planner verify``: the dense model vs a saved pruned one, timed interleaved here.

    With ``shape_from_plan`` the batch size, sequence length and phase come from the plan saved with
    the pruned model (what it was planned for); ``config`` gives the runtime, device and rounds. The
    execution mode is the plan's (``verification_config``).
    """
    from planner.stages.apply.pruned_io import backbone_of, load_pruned, read_pruned_config

    table = read_pruned_config(pruned)["plan"]["table"]
    config = verification_config(config, table, allow_mode_mismatch=allow_mode_mismatch)
    if shape_from_plan:
        phase = str(table.get("phase", "prefill"))
        tokens = int(table.get("generate_tokens", 0)) if phase == "generate" else 0
        config = config.replace(
            batch_size=int(table["batch_size"]),
            seq_len=int(table["seq_len"]),
            phase="prefill" if phase == "generate" else phase,
            generate=tokens,
        )
    loaded = load_configured(config)
    pruned_model = backbone_of(load_pruned(pruned))
    # Backbone against backbone: a fitted task head (if any) is the same size on both sides.
    return verify_models(
        loaded.adapter, {"dense": loaded.model, "pruned": pruned_model}, config.measurement(rounds=config.rounds)
    )


def recover_pruned(
    config: RunConfig,
    *,
    pruned: str | Path,
    out: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
) -> RecoveryLog:
    """``planner recover``: distil a saved pruned model from ``config.model`` (the dense one it was
    cut from) on the task's training split, and save the recovered model to ``out`` (same format,
    same shapes, plus ``recovery.json``). Interrupted, it resumes from ``<out>.recovery.pt``."""
    import json

    from planner.records.plan import plan_from_dict
    from planner.stages.apply.pruned_io import backbone_of, load_pruned, read_pruned_config, save_pruned
    from planner.stages.recover import recover
    from planner.stages.recover.files import discard_checkpoint
    from profilers.atomic import atomic_write_text

    settings = config.recovery_settings()
    if settings is None:
        raise PlannerError("planner recover needs a budget: --recover-seconds and/or --recover-tokens.")
    target = Path(out)
    if target.exists() and not overwrite:
        raise PlannerError(f"{target} already exists; choose another --out or pass --overwrite.")
    saved = read_pruned_config(pruned)
    plan = plan_from_dict(saved["plan"], source=str(Path(pruned) / "pruned_config.json"))
    config = planned_config(config, plan.table)
    loaded = load_configured(config)
    if plan.model_fingerprint != loaded.fingerprint:
        raise PlannerError(
            f"{pruned} was cut from model {plan.model_name!r} (fingerprint {plan.model_fingerprint}), not from "
            f"--model {config.model!r} (fingerprint {loaded.fingerprint}); pass the dense model it was cut from."
        )
    task = configured_task(config, loaded)
    student = backbone_of(load_pruned(pruned))
    checkpoint = target.with_name(target.name + ".recovery.pt")
    model_key = f"{plan.model_fingerprint}:{json.dumps(saved['units'], sort_keys=True)}:{task.provenance()}"
    recovered, record = recover(
        loaded.adapter, student, task, settings, checkpoint=checkpoint, model_key=model_key, progress=progress, log=log,
        in_place=True, device=config.device,
    )  # fmt: skip
    save_pruned(
        task.deployable(recovered),
        target,
        plan=plan,
        shape=saved["units"],
        base_config=saved["base_config"],
        overwrite=overwrite,
    )
    atomic_write_text(target / "recovery.json", json.dumps(record.as_dict(), indent=2) + "\n")
    discard_checkpoint(checkpoint)
    return record
