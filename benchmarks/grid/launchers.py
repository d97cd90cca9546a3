"""Launchers: where the cells of a grid run. A registry, `LAUNCHERS` (name -> function).

- `local` (the default): every selected cell in this process, one after another
  (`benchmarks.grid.runner.run_suite`).
- `submitit`: one SLURM array job through submitit, ONE CELL PER ARRAY TASK; each task calls the
  same `run_suite` restricted to its cell, so it writes the same atomic JSON record (and samples
  file) under `out_dir`, and resume, `--shard`, `--only` and the leaderboard work unchanged. Only
  cells without a record are submitted (all selected cells with `force`). Submission options
  (`SubmititOptions`): partition, GPUs per task, CPUs per task, memory, time limit, array
  parallelism, account, QoS and setup lines (e.g. `source .venv/bin/activate`). With `wait`
  the launcher blocks until every task ended and returns their records; otherwise it returns
  after submission (rebuild the leaderboard with `tiltbench leaderboard` once the array is done).
- `submitit-local`: the same code path through submitit's local executor, which runs every task as
  a real subprocess on this machine (used by the tests; handy to check a grid before a cluster
  submission). Always waits.

No scheduler is written here: the array job is SLURM's, the per-task resources are SLURM's, the
retry of a failed or pre-empted task is a re-submission (finished cells are skipped).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (benchmarks.grid.runner, which imports jax, is imported lazily)
from benchmarks.grid.suites import Cell, Suite

__all__ = ["LAUNCHERS", "SubmititOptions", "launch", "run_one_cell"]


@dataclasses.dataclass(frozen=True)
class SubmititOptions:
    """Submission options of the submitit launchers (None: the cluster's default).

    Attributes:
        log_dir: submitit's folder (pickled jobs, stdout/stderr of every task), `%j` allowed.
        partition: SLURM partition.
        gpus_per_task: GPUs per array task (one cell per task, one task per node).
        cpus_per_task: CPU cores per task.
        mem_gb: memory per task.
        time_min: time limit of one task, minutes.
        array_parallelism: at most this many tasks of the array run at once.
        account: SLURM account.
        qos: SLURM quality of service.
        setup: shell lines run before each task (e.g. `module load cuda`, `source .venv/bin/activate`).
        wait: block until every task has ended (always true for `submitit-local`).
        imports: modules each task imports first (`tiltbench --import`: user-registered methods).
    """

    log_dir: str = ".submitit"
    partition: str | None = None
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int = 60
    array_parallelism: int | None = None
    account: str | None = None
    qos: str | None = None
    setup: tuple[str, ...] = ()
    wait: bool = True
    imports: tuple[str, ...] = ()

    @classmethod
    def from_cli(cls, args: Any) -> SubmititOptions:
        """The options of `tiltbench benchmark`'s parsed arguments (`--log-dir`, `--partition`, …,
        `--setup` lines, `--no-wait`, `--import` modules): every field with the same name is read."""
        plain = {f.name for f in dataclasses.fields(cls)} - {"setup", "wait", "imports"}
        return cls(
            **{name: getattr(args, name) for name in plain},
            setup=tuple(args.setup),
            wait=not args.no_wait,
            imports=tuple(getattr(args, "imports", ()) or ()),
        )

    def __post_init__(self):
        for name in ("gpus_per_task", "cpus_per_task", "time_min", "array_parallelism"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < (0 if "gpus" in name else 1)):
                raise ValueError(f"{name} must be a positive integer (gpus_per_task may be 0), got {value!r}")

    def executor_parameters(self, cluster: str) -> dict[str, Any]:
        """The keyword arguments of `submitit.AutoExecutor.update_parameters` for `cluster`."""
        params: dict[str, Any] = {
            "name": "tiltbench",
            "timeout_min": self.time_min,
            "nodes": 1,
            "tasks_per_node": 1,
            "gpus_per_node": self.gpus_per_task,
            "cpus_per_task": self.cpus_per_task,
            "mem_gb": self.mem_gb,
        }
        if cluster == "slurm":
            params.update(
                slurm_partition=self.partition,
                slurm_array_parallelism=self.array_parallelism,
                slurm_account=self.account,
                slurm_qos=self.qos,
                slurm_setup=list(self.setup) or None,
            )
        return {k: v for k, v in params.items() if v is not None}


def run_one_cell(
    suite: Suite,
    out_dir: str,
    cell: Cell,
    force: bool,
    imports: tuple[str, ...] = (),
    retry: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """The body of one array task: `run_suite` restricted to `cell` (writes its record atomically)."""
    if imports:
        from benchmarks.grid.plugins import import_plugins

        import_plugins(list(imports))
    from benchmarks.grid.runner import run_suite

    only = {
        "method": {cell.method},
        "target": {cell.target},
        "budget": {cell.budget},
        "seed": {str(cell.seed)},
    }
    return run_suite(suite, out_dir, only=only, force=force, retry=retry, progress=False, log=print)


def _todo(suite: Suite, out: Path, shard, only, force, retry=(), log=print) -> list[Cell]:
    from benchmarks.grid.runner import plan_cells, select_cells

    cells = select_cells(suite, shard=shard, only=only)
    return [p.cell for p in plan_cells(suite, out, cells, force=force, retry=retry, log=log)]


def _run_submitit(cluster: str) -> Callable[..., list[dict[str, Any]]]:
    def run(
        suite: Suite,
        out_dir: str | os.PathLike,
        *,
        shard=(0, 1),
        only=None,
        force: bool = False,
        retry=(),
        progress: bool = True,
        log: Callable[[str], None] = print,
        options: SubmititOptions | None = None,
    ) -> list[dict[str, Any]]:
        import submitit

        options = options or SubmititOptions()
        out = Path(out_dir).resolve()  # tasks may start in another working directory
        todo = _todo(suite, out, shard, only, force, retry, log)
        total = len(_todo(suite, out, shard, only, True))
        log(
            f"suite {suite.name!r}: {total} cells selected, {len(todo)} to submit ({cluster}) "
            f"-> {out / suite.name}"
        )
        if not todo:
            return []
        executor = submitit.AutoExecutor(folder=options.log_dir, cluster=cluster)
        executor.update_parameters(**options.executor_parameters(cluster))
        n = len(todo)
        jobs = executor.map_array(
            run_one_cell,
            [suite] * n,
            [str(out)] * n,
            todo,
            [force] * n,
            [options.imports] * n,
            [tuple(retry)] * n,
        )
        log(f"submitted {n} task(s): job {jobs[0].job_id.split('_')[0]}; logs under {options.log_dir}")
        if not (options.wait or cluster == "local"):
            log("not waiting; run `tiltbench leaderboard` when the array has finished")
            return []
        records: list[dict[str, Any]] = []
        for cell, job in zip(todo, jobs, strict=True):
            try:
                written = job.result()
            except Exception as err:  # noqa: BLE001 - a task that died outside run_cell (killed, OOM)
                log(
                    f"   error  {cell.id}  (task {job.job_id} failed: {type(err).__name__}: {str(err)[:200]})"
                )
                continue
            for rec in written:
                log(f"{rec['status']:>8}  {cell.id}  {rec.get('wall_time_s', 0):.1f}s  (task {job.job_id})")
            records.extend(written)
        return records

    return run


def _run_local(
    suite, out_dir, *, shard=(0, 1), only=None, force=False, retry=(), progress=True, log=print, options=None
):
    del options  # nothing to configure
    from benchmarks.grid.runner import run_suite

    return run_suite(
        suite, out_dir, shard=shard, only=only, force=force, retry=retry, progress=progress, log=log
    )


LAUNCHERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "local": _run_local,
    "submitit": _run_submitit("slurm"),
    "submitit-local": _run_submitit("local"),
}


def launch(name: str, suite: Suite, out_dir: str | os.PathLike, **kwargs: Any) -> list[dict[str, Any]]:
    """Run the selected, unfinished cells of `suite` with the launcher `name`; returns the records written."""
    if name not in LAUNCHERS:
        raise ValueError(f"unknown launcher {name!r}; valid launchers: {sorted(LAUNCHERS)}")
    return LAUNCHERS[name](suite, out_dir, **kwargs)
