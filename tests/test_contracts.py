"""Contract suites: one list of checks run over every registered implementation of each extension
point (model adapters, backends, tasks, runtimes; the solvers' suite is in test_solvers.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from planner.backends import BACKENDS, get_backend
from planner.models import ADAPTERS
from planner.models.fingerprint import model_fingerprint
from planner.stages.solve import solve_plan
from profilers import RUNTIMES, Profiler, ProfilerSettings, Workload
from tests.tiny_models import TINY_ADAPTERS, TINY_TASKS, loaded_of, table_for


def _inputs(adapter: Any, batch: int = 3, seq: int = 7) -> tuple[torch.Tensor, ...]:
    return tuple(adapter.example_inputs(batch, seq))


def _output(adapter: Any, model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return adapter.forward_module_of(model)(*inputs)  # type: ignore[no-any-return]


def test_every_family_has_a_tiny_model_in_the_suite() -> None:
    assert set(ADAPTERS) <= {name.split("/")[0] for name in TINY_ADAPTERS}


# ----- model adapters ---------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(TINY_ADAPTERS))
def test_adapter_units_cover_every_prunable_module_once(family: str) -> None:
    adapter = TINY_ADAPTERS[family]()
    units = adapter.units()
    modules = dict(adapter.model.named_modules())
    owned = [path for u in units for path in u.modules.values()]
    assert len(owned) == len(set(owned)), "a module belongs to two units"
    assert all(path in modules for path in owned)
    layers = len(adapter.layers)
    assert sorted((u.layer, u.kind) for u in units) == sorted(
        (i, kind) for i in range(layers) for kind in ("attention", "ffn")
    )
    for unit in units:
        assert unit.levels[0].structure == "dense" and unit.levels[0].kept == unit.size
        assert unit.levels[-1].kept == 0


@pytest.mark.parametrize("family", sorted(TINY_ADAPTERS))
def test_shrinking_to_level_zero_reproduces_the_dense_outputs(family: str) -> None:
    adapter = TINY_ADAPTERS[family]()
    inputs = _inputs(adapter)
    dense = _output(adapter, adapter.model, inputs)
    same = adapter.shrink_to_levels({u.name: 0 for u in adapter.units()})
    torch.testing.assert_close(_output(adapter, same, inputs), dense, rtol=0, atol=0)


@pytest.mark.parametrize("family", sorted(TINY_ADAPTERS))
@pytest.mark.parametrize("seed", [0, 1])
def test_shrinking_equals_masking(family: str, seed: int) -> None:
    adapter = TINY_ADAPTERS[family]()
    before = model_fingerprint(adapter.model)
    rng = np.random.default_rng(seed)
    keep, masks = {}, {}
    for unit in adapter.units():
        level = unit.levels[int(rng.integers(len(unit.levels)))]
        chosen = _random_keep(unit, level, rng)
        keep[unit.name] = chosen
        masks[unit.name] = torch.zeros(unit.size)
        masks[unit.name][list(chosen)] = 1.0
    inputs = _inputs(adapter)
    with adapter.masked(masks):
        expected = _output(adapter, adapter.model, inputs)
    shrunk = adapter.shrink(keep)
    torch.testing.assert_close(_output(adapter, shrunk, inputs), expected, rtol=1e-5, atol=1e-5)
    assert model_fingerprint(adapter.model) == before
    shape = adapter.kept_shape(shrunk)
    assert all(shape[name]["kept"] == len(k) for name, k in keep.items())


@pytest.mark.parametrize("family", sorted(TINY_ADAPTERS))
def test_candidate_builder_equals_shrink_and_shares_unchanged_tensors(family: str) -> None:
    from planner.stages.search import CandidateBuilder

    adapter = TINY_ADAPTERS[family]()
    before = model_fingerprint(adapter.model)
    builder = CandidateBuilder(adapter)
    rng = np.random.default_rng(3)
    inputs = _inputs(adapter)
    dense_ptrs = {p.data_ptr() for p in adapter.model.parameters()}
    units = adapter.units()
    for _ in range(3):
        keep = {}
        for unit in units[: len(units) // 2]:  # the second half of the layers stays dense
            level = unit.levels[int(rng.integers(len(unit.levels)))]
            keep[unit.name] = _random_keep(unit, level, rng)
        built = builder.model(keep)
        torch.testing.assert_close(_output(adapter, built, inputs), _output(adapter, adapter.shrink(keep), inputs))
        last_layer = adapter.layers_of(built)[-1]
        assert all(p.data_ptr() in dense_ptrs for p in last_layer.parameters())
        assert adapter.kept_shape(built) == adapter.kept_shape(adapter.shrink(keep))
    built_before = builder.built
    builder.model(keep)  # the same candidate again: every shrunk layer comes from the cache
    assert builder.built == built_before
    assert model_fingerprint(adapter.model) == before


def _random_keep(unit: Any, level: Any, rng: np.random.Generator) -> tuple[int, ...]:
    """Random heads / neurons a level could keep (whole KV groups, equal heads per group)."""
    kept = int(level.kept or 0)
    if unit.kind == "attention" and level.groups is not None and unit.groups != unit.size:
        if level.groups == 0:
            return ()
        q = unit.heads_per_group
        per = kept // level.groups
        groups = sorted(rng.choice(unit.groups, size=level.groups, replace=False).tolist())
        return tuple(sorted(g * q + int(h) for g in groups for h in rng.choice(q, size=per, replace=False)))
    return tuple(sorted(rng.choice(unit.size, size=kept, replace=False).tolist()))


# ----- backends ---------------------------------------------------------------------------------
def _task_for(family: str, adapter: Any) -> Any:
    return TINY_TASKS[family](adapter)


@pytest.mark.parametrize("backend_name", sorted(BACKENDS))
@pytest.mark.parametrize("family", sorted(TINY_ADAPTERS))
def test_backend_contract(backend_name: str, family: str) -> None:
    adapter = TINY_ADAPTERS[family]()
    task = _task_for(family, adapter)
    backend = get_backend(backend_name)
    before = model_fingerprint(adapter.model)
    scores = backend.score(adapter, task)
    assert scores.units == tuple(u.name for u in adapter.units())
    for unit, errors in zip(adapter.units(), scores.errors, strict=True):
        assert errors.shape == (len(unit.levels),) and errors[0] == 0.0 and np.all(np.isfinite(errors))
        for level in unit.levels:
            keep = backend.select(scores, unit, level)
            assert len(keep) == len(set(keep)) == level.kept
            assert all(0 <= i < unit.size for i in keep) and list(keep) == sorted(keep)
            adapter.check_keep(unit, keep)  # a valid structure (whole KV groups)
    loaded = loaded_of(adapter.model, adapter)
    table = table_for(adapter, loaded.fingerprint)
    plan = solve_plan(loaded=loaded, table=table, scores=scores, backend=backend, speedup=2.0)
    pruned = backend.apply(adapter, plan, task)
    assert model_fingerprint(adapter.model) == before, "apply changed the caller's model"
    shape = adapter.kept_shape(pruned)
    for choice in plan.units:
        assert shape[choice.unit]["kept"] == choice.kept
    assert _output(adapter, pruned, _inputs(adapter)).shape == _output(adapter, adapter.model, _inputs(adapter)).shape


# ----- tasks ------------------------------------------------------------------------------------
TASK_BUILDERS: dict[str, Callable[[Path], Any]] = {}


def _classification(workspace: Path) -> tuple[Any, Any]:
    from planner.models import load_model
    from planner.tasks import build_task

    loaded = load_model(str(workspace / "model"), batch_size=2, seq_len=16)
    task = build_task(
        loaded,
        data=str(workspace / "data"),
        seq_len=16,
        calibration_size=8,
        batch_size=4,
        seed=0,
        cache_dir=workspace / "cache",
    )
    return loaded, task


def _causal_lm(workspace: Path) -> tuple[Any, Any]:
    from planner.models import load_model
    from planner.tasks import build_task

    loaded = load_model(str(workspace / "lm"), batch_size=2, seq_len=16)
    task = build_task(
        loaded,
        data=str(workspace / "text"),
        seq_len=16,
        calibration_size=6,
        batch_size=2,
        seed=0,
        cache_dir=workspace / "cache",
    )
    return loaded, task


TASK_BUILDERS["text-classification"] = _classification
TASK_BUILDERS["causal-lm"] = _causal_lm


@pytest.mark.parametrize("name", sorted(TASK_BUILDERS))
def test_task_contract(name: str, workspace: Path) -> None:
    from planner.tasks import TASKS

    assert set(TASKS) <= set(TASK_BUILDERS)
    loaded, task = TASK_BUILDERS[name](workspace)
    assert task.name == name and len(task.calibration) > 0 and len(task.test) > 0
    model = loaded.model
    reference = task.reference(model, task.calibration)
    kl = task.divergence(model, task.calibration, reference)
    assert kl.shape == (len(task.calibration),) and np.allclose(kl, 0.0, atol=1e-6)
    ids, mask, labels = next(task.calibration.batches(task.batch_size))
    loss = task.task_loss(model, ids, mask, labels)
    assert loss.ndim == 0 and torch.isfinite(loss)
    metric = task.evaluate(model)
    assert metric.name == task.metric and metric.examples == len(task.test) and np.isfinite(metric.value)
    assert isinstance(task.deployable(model), torch.nn.Module) and task.provenance()["task"] == name


# ----- runtimes ---------------------------------------------------------------------------------
# llama.cpp runs decoder workloads only (written as GGUF); its contract is tested in test_gguf.py.
@pytest.mark.parametrize("runtime", sorted(set(RUNTIMES) - {"llama.cpp"}))
def test_runtime_contract(runtime: str) -> None:
    threads = torch.get_num_threads()
    settings = ProfilerSettings(runtime=runtime, device="cpu", dtype="float32", threads=1, rounds=3, min_sample_ms=0.0)
    work = [
        Workload("m", torch.nn.Linear(8, 4), (torch.randn(2, 8),)),
        Workload("w", torch.nn.ReLU(), (torch.randn(5),)),
    ]
    stats = Profiler(settings).measure(work, progress=False)
    for s in stats.values():
        assert np.isfinite(s.median_ms) and s.median_ms > 0 and 3 <= s.repeats == len(s.samples_ms) <= 9
        assert s.ci_low_ms <= s.estimate_ms <= s.ci_high_ms
    assert torch.get_num_threads() == threads  # thread settings restored


def _tensors_reachable(obj: Any, *, depth: int = 4, seen: set[int] | None = None) -> list[tuple[str, torch.Tensor]]:
    """Every tensor an object holds: a module's parameters and buffers, and tensors kept in plain
    attributes (dicts, tuples, lists, other objects such as a KV cache), ``depth`` levels deep."""
    seen = set() if seen is None else seen
    found: list[tuple[str, torch.Tensor]] = []
    if id(obj) in seen or depth < 0:
        return found
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [("", obj)]
    if isinstance(obj, torch.nn.Module):
        found += [(name, t) for name, t in obj.named_parameters()] + [(name, t) for name, t in obj.named_buffers()]
        children: Any = {
            k: v for k, v in vars(obj).items() if k not in ("_parameters", "_buffers", "_modules") and k[:1] != "__"
        }
        children.update(dict(obj.named_children()))
    elif isinstance(obj, dict):
        children = obj
    elif isinstance(obj, (list, tuple)):
        children = dict(enumerate(obj))
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        children = vars(obj)
    else:
        return found
    for key, value in children.items():
        for name, tensor in _tensors_reachable(value, depth=depth - 1, seen=seen):
            found.append((f"{key}.{name}".rstrip("."), tensor))
    return found


@pytest.mark.parametrize("family", sorted(TINY_ADAPTERS))
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_moving_a_workload_moves_every_tensor_it_uses(family: str, phase: str) -> None:
    """What a runtime does to time on a GPU (``module.to(device, dtype)``) must move all of a
    workload, including captured rotary embeddings, masks and KV caches; the ``meta`` device shows
    on a CPU any tensor that would stay behind."""
    from planner.models.phases import Shape

    adapter = TINY_ADAPTERS[family]()
    if phase == "decode" and not getattr(adapter, "causal_lm", False):
        pytest.skip("only causal LMs have a decode phase")
    shape = Shape(batch_size=2, seq_len=6, phase=phase)
    workloads = adapter.workloads(adapter.units(), shape, runtime="torch", device="cpu", dtype=torch.float32)
    assert workloads
    timed, _ = adapter.timed(adapter.model, shape)
    for name, module in [(f"{w.signature}/{w.level}", w.module) for w in workloads] + [("whole model", timed)]:
        moved = module.to(device="meta", dtype=torch.float16)
        left = [n for n, t in _tensors_reachable(moved) if t.device.type != "meta"]
        assert not left, f"{name}: tensors left on the CPU after .to('meta'): {left[:5]}"
        floats = [n for n, t in _tensors_reachable(moved) if t.is_floating_point() and t.dtype != torch.float16]
        assert not floats, f"{name}: floating-point tensors not cast to float16: {floats[:5]}"
