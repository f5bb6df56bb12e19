"""A training run in its folder: start or resume, meta.json, DDP start-up, the outcome.

:func:`train` is the entry point (``dainv train``). The folder's life cycle (prepare, force,
identity marker, lock) is :mod:`dainv.runio`'s; the checkpoint format :mod:`dainv.checkpoint`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dainv import checkpoint, runio
from dainv.config import RunConfig, dump_yaml, from_dict, to_dict, validate
from dainv.data import Dataset
from dainv.errors import RunError, TimeLimitReached
from dainv.runtime import dist_info, resolve_device
from dainv.trainparts import split_batch

if TYPE_CHECKING:
    from dainv.train import Trainer

__all__ = ["train"]


# ---------------------------------------------------------------------- a run in its folder
def _resume_config(cfg: RunConfig | None, run_dir: Path, extend_epochs: int | None) -> RunConfig:
    """The run's own config; ``cfg`` (or ``extend_epochs``) may differ from it in train.epochs only."""
    if not runio.is_run_dir(run_dir):
        if runio.run_state(run_dir) == "incomplete":
            raise RunError(
                f"--resume {run_dir}: an incomplete run folder (killed while it was being created, "
                "before training started: config.yaml but no meta.json); nothing is lost — start it "
                f"again from scratch with the same command and --force (or delete {run_dir})"
            )
        raise RunError(f"--resume {run_dir}: not a dainv run folder (it needs config.yaml and meta.json)")
    from dainv.config import _read_yaml

    saved = from_dict(_read_yaml(run_dir / "config.yaml"))
    runio.read_meta(run_dir)  # a damaged meta.json: say so now
    if cfg is not None:
        a, b = to_dict(cfg), to_dict(saved)
        a["train"]["epochs"] = b["train"]["epochs"]
        if a != b:
            diff = [k for k, v in to_dict(cfg).items() if to_dict(saved).get(k) != v]
            raise RunError(
                f"--resume {run_dir}: the config given differs from the run's own ({diff}); "
                "resume without a preset/config/overrides (only train.epochs may be raised)"
            )
        extend_epochs = extend_epochs or cfg.train.epochs
    if extend_epochs is not None and extend_epochs != saved.train.epochs:
        saved = dataclasses.replace(saved, train=dataclasses.replace(saved.train, epochs=int(extend_epochs)))
    return saved


def _restore(trainer: Trainer, run_dir: Path, force: bool, meta: dict[str, Any]) -> dict[str, Any]:
    """Load ``last.pt`` into ``trainer``; refuse a finished run unless it is being extended.

    Returns the entries for meta.json: ``extended`` when ``train.epochs`` was raised, and
    ``kept_epochs_lost`` (:func:`_restore_kept`).
    """
    ck = run_dir / "checkpoints" / "last.pt"
    if not ck.exists():
        return {}
    try:
        state = checkpoint.load_checkpoint(ck)  # on the CPU, whatever device wrote it
    except RunError as e:
        raise RunError(f"{str(e).split('; use another')[0]}; {checkpoint.recovery_hint(run_dir, ck)}") from None
    theirs = from_dict(state["config"]) if isinstance(state.get("config"), dict) else None
    checkpoint.check_resumable(state, to_dict(trainer.cfg), to_dict(theirs) if theirs else {}, ck)
    trainer.load_state_dict(state)
    epochs, was = trainer.cfg.train.epochs, theirs.train.epochs
    if epochs < trainer.epoch:
        raise RunError(f"--resume {run_dir}: train.epochs={epochs} is below the {trainer.epoch} epochs already trained")
    if meta.get("status") == "finished" and trainer.epoch >= epochs and not force:
        raise RunError(
            f"{run_dir} is already finished; nothing to resume (to train it longer, raise "
            f"train.epochs: dainv train --resume {run_dir} --set train.epochs=N)"
        )
    extended = {"from": was, "to": epochs, "at": runio.now()} if epochs > was else None
    if extended and trainer.epoch >= was and trainer.is_main:  # its final.pt is final no more
        (run_dir / "checkpoints" / "final.pt").unlink(missing_ok=True)
    out: dict[str, Any] = {"extended": meta.get("extended", []) + [extended]} if extended else {}
    lost = _restore_kept(trainer, run_dir) if trainer.is_main else []
    if lost or meta.get("kept_epochs_lost"):
        out["kept_epochs_lost"] = sorted({*meta.get("kept_epochs_lost", []), *lost})
    if trainer.epoch >= epochs:  # killed between last.pt and final.pt
        trainer.save_checkpoint(final=True)
    return out


def _restore_kept(trainer: Trainer, run_dir: Path) -> list[int]:
    """Make again the kept checkpoints (``train.keep_epochs``) of epochs already trained that a
    kill lost (it came while ``epoch-NNNN.pt`` was written, after ``last.pt``): the one that the
    resumed-from ``last.pt`` is exactly (that epoch, complete) is a copy of it. Returns the others,
    which cannot be made again, after saying so."""
    ck = run_dir / "checkpoints"
    lost = []
    for e in sorted(set(trainer.cfg.train.keep_epochs)):
        kept = ck / f"epoch-{e:04d}.pt"
        if e > trainer.epoch or kept.exists():
            continue
        if e == trainer.epoch and trainer.partial is None:
            runio.atomic_write_bytes(kept, (ck / "last.pt").read_bytes())
            print(f"resume: {kept} (train.keep_epochs) was lost when the run was stopped; made again "
                  "from last.pt, which holds exactly that epoch", file=sys.stderr)  # fmt: skip
        else:
            lost.append(e)
    if lost:
        print(f"warning: {run_dir}: the kept checkpoint(s) of epoch(s) {', '.join(map(str, lost))} "
              f"(train.keep_epochs) are missing — the run was stopped while writing them, or they were "
              f"deleted — and cannot be made again (last.pt holds epoch {trainer.epoch}); their evaluation "
              "and the report's gap vs epochs will lack them (meta.json: kept_epochs_lost)", file=sys.stderr)  # fmt: skip
    return lost


def _data_entries(trainer: Trainer, run_dir: Path, meta: dict[str, Any], accept: bool) -> dict[str, Any]:
    """meta.json's ``data``: the images the run trains and is tested on (name, counts, SHA-256
    of each split: :meth:`~dainv.data.Dataset.digest`). On a resume, data whose digests differ
    from those recorded at the start (a file overwritten, other images in a folder) is refused
    unless ``accept``: the run would continue on other data than it began with, silently."""
    d = trainer.data
    now = {"name": d.name, "source": d.source, "n_train": len(d.y_train), "n_test": len(d.y_test),
           "digest": {"train": d.digest("train"), "test": d.digest("test")}}  # fmt: skip
    was = meta.get("data")
    if not isinstance(was, dict) or not isinstance(was.get("digest"), dict) or was["digest"] == now["digest"]:
        return {"data": now}  # a new run, the same data, or a run begun before dainv recorded it
    splits = " and ".join(s for s in ("train", "test") if was["digest"].get(s) != now["digest"][s])
    if not accept:
        raise RunError(
            f"--resume {run_dir}: the data changed since the run started — the {splits} images of "
            f"{now['name']} ({now['n_train']} training, {now['n_test']} test) are not those recorded in "
            f"{run_dir / 'meta.json'} (data: {was.get('name')}, {was.get('n_train')} training, "
            f"{was.get('n_test')} test; by SHA-256 of the images). Restore the data the run started "
            "with, or start a new run (--force, or another --out); to go on with the changed data "
            "anyway, add --accept-changed-data (recorded in meta.json as data_changed)"
        )
    change = {"at": runio.now(), "splits": splits, "was": was}
    print(f"warning: {run_dir}: resuming on changed data ({splits} images; --accept-changed-data)", file=sys.stderr)
    return {"data": now, "data_changed": meta.get("data_changed", []) + [change]}


def _init_distributed(cfg: RunConfig, world: int, local_rank: int) -> None:
    """Pick this process's GPU before NCCL starts (set_device + device_id), then wait for all."""
    if world == 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        if resolve_device(cfg.device).type == "cuda":
            torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        else:
            dist.init_process_group("gloo")
    dist.barrier()


def _start_meta(trainer: Trainer, run_dir: Path, resume: bool, entries: dict[str, Any]) -> dict[str, Any]:
    """Write config.yaml and meta.json (the identity marker, last) for a new or resumed run;
    ``entries`` (the run's data, an extension, lost kept checkpoints) go into meta.json."""
    if resume:
        meta = runio.read_meta(run_dir)
        meta["resumed"] = meta.get("resumed", []) + [runio.now()]
        if "extended" in entries:
            runio.atomic_write_text(run_dir / "config.yaml", dump_yaml(trainer.cfg))
    else:  # run_id: tells this run's evaluations from those of a run that --force replaced
        meta = {"started": runio.now(), "command": sys.argv, "run_id": uuid.uuid4().hex}
    meta.update(entries)
    meta.update(
        status="running",
        finished=None,
        world_size=trainer.world,
        batch_per_rank=trainer.batch_per_rank,
        backends=trainer.backends,
        **runio.environment(trainer.device),
    )
    if resume:
        runio.write_json(run_dir / "meta.json", meta)
    else:  # the trainer's config: ``auto`` settings resolved to what actually runs
        runio.begin_run(run_dir, dump_yaml(trainer.cfg), meta)
    return meta


def train(
    cfg: RunConfig | None,
    run_dir: Path,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    data: Dataset | None = None,
    extend_epochs: int | None = None,
    deadline: float | None = None,
    accept_changed_data: bool = False,
    download: bool | None = None,
) -> Trainer:
    """Train into ``run_dir`` (or resume the run there). Returns the finished trainer.

    With ``resume``, ``cfg`` is None (the run's own config.yaml is used) or differs from it only
    in ``train.epochs``; raising it (or ``extend_epochs=N``) extends even a finished run, the
    schedule's milestones as configured; meta.json records it under ``extended``. A resume on
    data other than the run started with (``meta.json``'s ``data`` digests) is refused unless
    ``accept_changed_data`` (recorded under ``data_changed``). ``deadline`` (``--time-limit``):
    stop before it with a resumable checkpoint, raising :class:`~dainv.errors.TimeLimitReached`.
    """
    run_dir = Path(run_dir)
    rank, world, local_rank = dist_info()
    meta: dict[str, Any] = {}
    if resume:
        cfg = _resume_config(cfg, run_dir, extend_epochs)
        meta = runio.read_meta(run_dir)
    else:
        assert cfg is not None, "train(cfg=None) needs resume=True"
        validate(cfg)
        split_batch(cfg.train.batch_size, cfg.train.views, world)
        if rank == 0:
            runio.prepare_run_dir(run_dir, force)
    _init_distributed(cfg, world, local_rank)
    lock = runio.RunLock(run_dir)
    if rank == 0:
        lock.acquire()
        runio.remove_stale_temps(run_dir)
    from dainv.train import Trainer  # dainv.train imports this module at its end

    try:
        trainer = Trainer(cfg, run_dir, data=data, quiet=quiet, download=download)
        entries = _data_entries(trainer, run_dir, meta, accept_changed_data) if resume or rank == 0 else {}
        if resume:
            entries.update(_restore(trainer, run_dir, force, meta))
        if rank == 0:
            meta = _start_meta(trainer, run_dir, resume, entries)
        _fit(trainer, run_dir, meta, deadline)
        if world > 1:  # leave together: a rank that tears gloo down early can abort a peer
            import torch.distributed as dist

            dist.barrier()
        return trainer
    finally:
        lock.release()
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _fit(trainer: Trainer, run_dir: Path, meta: dict[str, Any], deadline: float | None) -> None:
    """``trainer.fit()`` (stopping before ``deadline``), recording the outcome (finished,
    interrupted, failed) in meta.json."""
    trainer.deadline = deadline
    t0 = time.perf_counter()
    status = "failed"
    try:
        trainer.fit()
        status = "finished"
    except (KeyboardInterrupt, TimeLimitReached):
        # stopped in its last step, the run is complete all the same: final.pt is written
        status = "finished" if trainer.complete else "interrupted"
        raise
    finally:
        if trainer.is_main:
            meta["status"] = status
            meta["wall_time_s"] = meta.get("wall_time_s", 0.0) + time.perf_counter() - t0
            meta["train_time_s"] = sum(r["epoch_time_s"] for r in trainer.history)
            if status == "finished":
                meta["finished"] = runio.now()
            with contextlib.suppress(RunError):
                runio.write_json(run_dir / "meta.json", meta)
