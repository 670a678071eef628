"""Taking a job in: copy the file into the agent's spool, read it once for the quote, queue it.

Whatever the door (CLI, slicer upload, kiosk), a job is the same: a file the agent owns (so a member
deleting theirs changes nothing), its hash, the analyzer's figures and the tariff's price for them.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import timedelta
from pathlib import Path
from typing import Any

from .config import AgentConfig
from .errors import InvalidInput, StorageUnavailable
from .firmware.profile import Profile, load_profile
from .gcode import thumbnails
from .gcode.analyzer import Analysis, analyze_path
from .ledger import Ledger
from .ledger.tariff import Tariff, price, quantities
from .ledger.usage import iso, utc_now
from .materials import Material, check, file_types, loaded, reweigh

CHUNK = 1 << 20


class JobRefused(InvalidInput):
    """The file may not run on that machine; the message says why (policy, fit, bad file)."""

    code = "job-refused"


def estimate_of(a: Analysis, material: Material | None = None) -> dict[str, Any]:
    """The part of an analysis a quote and a usage record use, JSON-ready; grams at the loaded
    material's density when it is a preset."""
    return {
        "time_s": round(a.estimated_s, 3),
        "moving_s": round(a.moving_s, 3),
        "heating_s": round(a.heating_s, 3),
        "dwell_s": round(a.dwell_s + a.other_s, 3),
        "material_mm": round(a.material_mm, 3),
        "material_g": round(reweigh(a.material_g, a.density_g_cm3, material), 3),
        "beam_on_s": round(a.beam_on_s, 3),
        "spindle_on_s": round(a.spindle_on_s, 3),
        "lines": a.lines,
        "bounds": a.bounds,  # where it works (a frame traces its X/Y)
        "bounds_all": a.bounds_all_moves,  # where it goes, rapids included (checked against the travel)
        "producer": a.producer,
        "warnings": a.warnings[:20],
    }


def quote(estimate: dict[str, Any], tariff: Tariff) -> dict[str, Any]:
    """What the job will cost if it runs to the end, by the machine's tariff."""
    figures = {
        "active_s": estimate["moving_s"] + estimate["dwell_s"],
        "heating_s": estimate["heating_s"],
        "material_g": estimate["material_g"],
        "material_mm": estimate["material_mm"],
        "beam_on_s": estimate["beam_on_s"],
        "spindle_on_s": estimate["spindle_on_s"],
    }
    qty = quantities(figures)
    return {"price": str(price(tariff, qty, "done_part")), "currency": tariff.currency, "quantities": qty}


def spool_file(src: Path, spool: Path, name: str, move: bool = False) -> tuple[Path, str, int]:
    """Copy (or with `move`, rename) into the spool; returns (path, sha256, size).

    A copy is written whole to a temporary name, then renamed: a half-written job never exists. Every
    submission gets a file of its own (hash and a random part): two uploads of one file are two jobs,
    and refusing or deleting one never takes the other's file away.
    """
    spool.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    if move:
        with src.open("rb") as fin:
            while chunk := fin.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        tmp_name = src
    else:
        with (
            src.open("rb") as fin,
            tempfile.NamedTemporaryFile(dir=spool, delete=False, suffix=".part") as tmp,
        ):
            while chunk := fin.read(CHUNK):
                digest.update(chunk)
                tmp.write(chunk)
                size += len(chunk)
        tmp_name = Path(tmp.name)
    sha = digest.hexdigest()
    dest = spool / f"{sha[:16]}-{uuid.uuid4().hex[:8]}-{Path(name).name}"
    tmp_name.replace(dest)
    return dest, sha, size


class SpoolFull(JobRefused):
    """No room for the file: a spool quota, or the disk's free-space reserve (HTTP 507)."""

    status = StorageUnavailable.status
    code = "storage-full"


MB = 1_000_000


def check_room(config: AgentConfig, ledger: Ledger, size: int, submitted_by: str | None,
               key_quota_mb: float | None) -> None:  # fmt: skip
    """Refuse a file that would pass the spool's quota, its sender's, or leave the disk too full for
    the ledger; each refusal names the limit and the setting that sets it."""
    total = ledger.spooled_bytes()
    if total + size > config.spool.quota_mb * MB:
        raise SpoolFull(
            f"the job files waiting take {total / MB:.1f} MB; {size / MB:.1f} MB more would pass "
            f"the spool's {config.spool.quota_mb:g} MB quota ([agent] spool_quota_mb)"
        )
    if submitted_by is not None and key_quota_mb is not None:
        mine = ledger.spooled_bytes(submitted_by)
        if mine + size > key_quota_mb * MB:
            raise SpoolFull(
                f"{submitted_by}'s job files take {mine / MB:.1f} MB; {size / MB:.1f} MB more would "
                f"pass its {key_quota_mb:g} MB quota ([api] key_quota_mb, or the key's quota_mb)"
            )
    config.spool_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(config.spool_dir).free
    if free < config.spool.min_free_mb * MB:
        raise SpoolFull(
            f"only {free / MB:.0f} MB free on the disk; uploads stop below {config.spool.min_free_mb:g} MB "
            "so the ledger can always be written ([agent] min_free_mb)"
        )


def sweep(config: AgentConfig, ledger: Ledger) -> int:
    """Remove the files of jobs that ended more than `spool.keep_h` ago; how many went."""
    cutoff = iso(utc_now() - timedelta(hours=config.spool.keep_h))
    spool = config.spool_dir.resolve()
    gone = 0
    for job in ledger.spool_leftovers(cutoff):
        path = Path(job["path"])
        if path.resolve().parent == spool:  # never anything outside the spool, whatever the row says
            path.unlink(missing_ok=True)
        ledger.file_removed(job["id"])
        gone += 1
    return gone


def _background() -> None:
    """The analysis process yields the CPU to the machine threads: a running job comes first."""
    os.nice(10)


class AnalysisPool:
    """Analyses in a separate process: ten 19 MB uploads analysed in threads of the agent held the GIL
    long enough to stall /health for 1.1 s. One worker, started on first use (spawned: the agent has
    threads, and a fork would copy their locks)."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self, path: Path, profile: Profile) -> Analysis:
        with self._lock:
            if self._pool is None:
                spawn = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(self.workers, mp_context=spawn, initializer=_background)
            pool = self._pool
        try:
            return pool.submit(analyze_path, path, profile).result()
        except BrokenProcessPool:  # the worker died (out of memory?): a fresh one for the next upload
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            raise JobRefused(f"{path.name}: the analysis process died; try the upload again") from None

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


def submit(
    config: AgentConfig,
    ledger: Ledger,
    machine_id: str,
    src: str | Path,
    source: str,
    name: str | None = None,
    held: bool | None = None,
    move: bool = False,
    analyse: Callable[[Path, Profile], Analysis] = analyze_path,
    key_quota_mb: float | None = None,
    **who: str | None,
) -> tuple[str, dict[str, Any]]:
    """Spool, analyse and queue a job; returns (job id, quote). A refused file is removed again.
    The API analyses in a worker process (`analyse=`), so the GIL stays with its event loop."""
    machine = config.machine(machine_id)
    if not load_profile(machine.profile).streamed:
        raise JobRefused(f"{machine_id} is not driven by the agent: badge in and use it at the machine "
                         "(its use is billed from the session and its plug)")  # fmt: skip
    src = Path(src)
    if not src.is_file():
        raise JobRefused(f"{src}: no such file")
    check_room(config, ledger, src.stat().st_size, who.get("submitted_by"), key_quota_mb)
    path, sha, size = spool_file(src, config.spool_dir, name or src.name, move=move)
    try:
        analysis = analyse(path, load_profile(machine.profile))
        if analysis.refused:
            raise JobRefused(f"{name or src.name}: refused on {machine_id}: {analysis.refused}")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    material = loaded(config, ledger, machine_id)
    estimate = estimate_of(analysis, material)
    estimate["material"] = check(material, file_types(path))
    priced = quote(estimate, config.tariff_for(machine.id, material))
    estimate["quote"] = priced
    picture = thumbnails.extract(path)
    if picture is not None:
        estimate["thumbnail"] = {"media_type": picture.media_type, "size": [picture.width, picture.height]}
    held = machine.hold_uploads if held is None else held
    job_id = ledger.add_job(machine_id, str(path), name or src.name, sha, size, source, estimate, held, **who)
    if picture is not None:
        ledger.put_thumbnail(job_id, picture.media_type, picture.width, picture.height, picture.data)
    return job_id, {"job_id": job_id, "machine": machine_id, **estimate}
