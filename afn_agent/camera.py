"""A machine's camera: pictures at a job's start and end, at a fault and on demand, grabbed with ffmpeg
from a V4L2 device or an HTTP snapshot/MJPEG URL (what OctoPrint's webcam settings take).

Each camera has its own thread and a short queue: a dead or slow camera costs a dropped picture and a
log line, never a wait for the job, the pump or the API. Pictures are kept beside the ledger
(`<data_dir>/snapshots/<machine>/`), their hashes in the ledger's `snapshots` table, old ones removed by
age and size; each is said as a `snapshot` event, and its thumbnail is the machine's retained picture on
the bus (the fleet's tile).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .ledger.snapshots import Snapshots

log = logging.getLogger("afn_agent.camera")

Moment = Literal["start", "end", "fault"]
QUEUE = 4  # pictures waiting per camera; more are dropped (said in the log)
THUMB_WIDTH = 320
LAPSE_FRAMES = 3000  # a timelapse keeps at most this many frames (a day at 30 s)
LAPSE_ASSEMBLY_S = 300.0  # its video is given up after this long
RETRY_S = 1.0  # a grab refused quickly is tried once more after this
# Which events take which picture (the publisher's listener sees every event, on the caller's thread).
MOMENTS: dict[str, Moment] = {
    "job-started": "start", "job-completed": "end", "job-cancelled": "end", "job-failed": "end",
    "job-interrupted": "end", "fault": "fault", "alarm": "fault", "link-lost": "fault", "door-open": "fault",
    "stall": "fault",
}  # fmt: skip
_DEVICE = re.compile(r"/dev/video\d{1,3}|/dev/v4l/by-(id|path)/[\w:.+-]{1,200}")


class CameraSettings(BaseModel):
    """`[machines.camera]`: where the picture comes from, when it is taken, how long it is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str | None = Field(
        None, pattern=r"^https?://[^\s]{1,500}$", description="an HTTP snapshot or MJPEG stream URL"
    )
    device: str | None = Field(None, description="a V4L2 device: /dev/video0 or /dev/v4l/by-id/…")
    on: list[Moment] = Field(["start", "end", "fault"], description="when pictures are taken")
    width: int = Field(1280, ge=160, le=3840, description="the picture's width at most (pixels)")
    timeout_s: float = Field(10.0, ge=1, le=60, description="a grab that takes longer is given up")
    keep_days: float = Field(90.0, gt=0, le=3650, description="pictures older than this are removed")
    keep_mb: float = Field(500.0, gt=0, le=100_000, description="this machine's pictures take at most this")
    timelapse_s: float | None = Field(
        None, ge=2, le=600, description="a frame this often while a job runs, a video at its end"
    )

    @model_validator(mode="after")
    def _one_source(self) -> CameraSettings:
        if (self.url is None) == (self.device is None):
            raise ValueError("give either url (HTTP snapshot or MJPEG) or device (/dev/video…), not both")
        if self.device is not None and not _DEVICE.fullmatch(self.device):
            raise ValueError("device: /dev/videoN or a /dev/v4l/by-id/… or by-path/… name")
        return self

    def source(self) -> list[str]:
        """ffmpeg's input options for this camera."""
        if self.device is not None:
            return ["-f", "v4l2", "-i", self.device]
        return ["-rw_timeout", str(int(self.timeout_s * 1e6)), "-i", str(self.url)]


def grab_command(settings: CameraSettings, full: Path, thumb: Path, ffmpeg: str = "ffmpeg") -> list[str]:
    """One ffmpeg run: one frame, as a picture (at most `width` wide) and a thumbnail."""
    scale = (f"[0:v]split=2[a][b];[a]scale='min({settings.width},iw)':-2[full];"
             f"[b]scale={THUMB_WIDTH}:-2[thumb]")  # fmt: skip
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", *settings.source(),
            "-filter_complex", scale, "-map", "[full]", "-frames:v", "1", "-q:v", "3", "-y", str(full),
            "-map", "[thumb]", "-frames:v", "1", "-q:v", "5", "-y", str(thumb)]  # fmt: skip


@dataclass
class Timelapse:
    """A running job's timelapse: its frames so far, in a folder of their own, and the next one's time."""

    job_id: str
    folder: Path
    every_s: float
    frames: int = 0
    due: float = field(default_factory=time.monotonic)


class Camera:
    """One machine's camera thread; `take` only queues."""

    def __init__(
        self,
        machine_id: str,
        settings: CameraSettings,
        directory: Path,
        snapshots: Snapshots,
        on_taken: Callable[[dict[str, Any], bytes], None],
        ffmpeg: str = "ffmpeg",
    ) -> None:
        self.machine_id, self.settings, self.directory = machine_id, settings, directory
        self.snapshots, self.on_taken, self.ffmpeg = snapshots, on_taken, ffmpeg
        self.requests: queue.Queue[tuple[str, str | None, str] | None] = queue.Queue(QUEUE)
        self.dropped = 0
        self.failures = 0
        self.lapse: Timelapse | None = None  # the running job's timelapse, on this camera's thread only
        self.thread = threading.Thread(target=self._run, name=f"camera-{machine_id}", daemon=True)

    def start(self) -> Camera:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):
            self.requests.put_nowait(None)
        self.thread.join(self.settings.timeout_s + 2)

    def take(self, moment: str, job_id: str | None, actor: str = "agent") -> bool:
        """Queue a picture (a moment of `on`, or "demand"; a job's start and end for its timelapse);
        False when the queue is full."""
        lapse = self.settings.timelapse_s is not None and moment in ("start", "end")
        if moment != "demand" and moment not in self.settings.on and not lapse:
            return False
        try:
            self.requests.put_nowait((moment, job_id, actor))
            return True
        except queue.Full:
            self.dropped += 1
            log.warning("camera %s: %s picture dropped (the camera is behind)", self.machine_id, moment)
            return False

    def _run(self) -> None:
        while True:
            wait = None if self.lapse is None else max(0.0, self.lapse.due - time.monotonic())
            try:
                request = self.requests.get(timeout=wait)
            except queue.Empty:  # a timelapse frame is due
                self._guarded(self._frame)
                continue
            if request is None:
                return
            self._guarded(functools.partial(self._handle, *request))

    def _guarded(self, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:  # a picture is never worth the thread
            self.failures += 1
            log.exception("camera %s: picture failed", self.machine_id)

    def _handle(self, moment: str, job_id: str | None, actor: str) -> None:
        if moment == "demand" or moment in self.settings.on:
            self.capture(moment, job_id, actor)
        if self.settings.timelapse_s is None or job_id is None:
            return
        if moment == "start":
            self.lapse = Timelapse(job_id, self.directory / f".timelapse-{job_id}", self.settings.timelapse_s)
        elif moment == "end" and self.lapse is not None and self.lapse.job_id == job_id:
            lapse, self.lapse = self.lapse, None
            self._assemble(lapse)

    def _frame(self) -> None:
        """One timelapse frame (no thumbnail, no event)."""
        lapse = self.lapse
        if lapse is None:
            return
        lapse.due = time.monotonic() + lapse.every_s
        if lapse.frames >= LAPSE_FRAMES:
            return
        lapse.folder.mkdir(parents=True, exist_ok=True)
        frame = lapse.folder / f"frame-{lapse.frames:05d}.jpg"
        command = [self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", *self.settings.source(),
                   "-frames:v", "1", "-vf", f"scale='min({self.settings.width},iw)':-2", "-q:v", "4", "-y",
                   str(frame)]  # fmt: skip
        if _run_ffmpeg(command, self.settings.timeout_s + 2)[0] and frame.exists():
            lapse.frames += 1

    def _assemble(self, lapse: Timelapse) -> None:
        """The job's frames as one video beside its pictures (kept, hashed and said as they are). The
        frames go before the video is recorded: a recorded timelapse never has frames left beside it."""
        try:
            video = self._encode(lapse) if lapse.frames >= 2 else None
        finally:
            shutil.rmtree(lapse.folder, ignore_errors=True)
        if video is None:
            return
        data = video.read_bytes()
        row = self.snapshots.add(self.machine_id, lapse.job_id, "timelapse", str(video),
                                 hashlib.sha256(data).hexdigest(), len(data), "agent")  # fmt: skip
        self.prune(time.time())
        self.on_taken(row, b"")

    def _encode(self, lapse: Timelapse) -> Path | None:
        """The frames as an MP4 (ffmpeg, libx264); None, counted and logged, when it was not made."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        video = self.directory / f"{stamp}-timelapse-{lapse.job_id}.mp4"
        command = [self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-framerate", "10",
                   "-i", str(lapse.folder / "frame-%05d.jpg"), "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
                   "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-y",
                   str(video)]  # fmt: skip
        ok, why = _run_ffmpeg(command, LAPSE_ASSEMBLY_S)
        if not ok or not video.exists():
            self.failures += 1
            log.warning("camera %s: timelapse of %s not made (%s)", self.machine_id, lapse.job_id, why)
            video.unlink(missing_ok=True)
            return None
        return video

    def capture(self, moment: str, job_id: str | None, actor: str) -> dict[str, Any] | None:
        """Grab, keep, record and say one picture; None when the camera gave none in time."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{moment}-{job_id or 'none'}.jpg"
        full, thumb = self.directory / name, self.directory / f".{name}.thumb.jpg"
        command = grab_command(self.settings, full, thumb, self.ffmpeg)
        started = time.monotonic()
        ok, why = _run_ffmpeg(command, self.settings.timeout_s + 2)
        if not ok and time.monotonic() - started < self.settings.timeout_s / 2:
            time.sleep(RETRY_S)  # a webcam server between two clients, or restarting: once more
            ok, why = _run_ffmpeg(command, self.settings.timeout_s + 2)
        if not ok or not full.exists() or not thumb.exists():
            self.failures += 1
            full.unlink(missing_ok=True)
            thumb.unlink(missing_ok=True)
            log.warning("camera %s: no picture (%s)", self.machine_id, why or "no frame")
            return None
        data = full.read_bytes()
        small = thumb.read_bytes()
        thumb.unlink()
        row = self.snapshots.add(self.machine_id, job_id, moment, str(full), hashlib.sha256(data).hexdigest(),
                                 len(data), actor)  # fmt: skip
        self.prune(time.time())
        self.on_taken(row, small)
        return row

    def prune(self, now: float) -> int:
        """Remove this machine's oldest pictures beyond its age and size limits (their rows stay, with
        the hash, marked removed)."""
        kept = self.snapshots.kept(self.machine_id)  # newest first
        budget, removed = self.settings.keep_mb * 1_000_000, 0
        total = 0
        for row in kept:
            total += row["bytes"]
            too_old = now - row["taken_t"] > self.settings.keep_days * 86400
            if too_old or total > budget:
                Path(row["path"]).unlink(missing_ok=True)
                self.snapshots.removed(row["id"])
                removed += 1
        return removed


def _run_ffmpeg(command: list[str], limit_s: float) -> tuple[bool, str]:
    """(it made its files, what it said on stderr or why it did not run)."""
    try:
        done = subprocess.run(command, capture_output=True, timeout=limit_s, check=False)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return False, str(exc)
    return done.returncode == 0, done.stderr.decode(errors="replace").strip()[-300:]


def ffmpeg_path() -> str | None:
    return shutil.which("ffmpeg")


class Cameras:
    """The agent's cameras: one per machine that has `[machines.camera]`. It listens to the publisher's
    events (only queueing a picture), and says each picture taken: a `snapshot` event through the outbox,
    and the thumbnail as the machine's retained `picture` on the bus."""

    def __init__(self, machines: dict[str, CameraSettings], data_dir: Path, snapshots: Snapshots,
                 say: Callable[[str, str, dict[str, Any]], None], show: Callable[[str, dict[str, Any]], None],
                 job_of: Callable[[str], str | None], ffmpeg: str = "ffmpeg") -> None:  # fmt: skip
        self.say, self.show, self.job_of = say, show, job_of
        self.cameras = {
            m: Camera(m, settings, data_dir / "snapshots" / m, snapshots, self._taken, ffmpeg)
            for m, settings in machines.items()
        }

    def start(self) -> Cameras:
        for camera in self.cameras.values():
            camera.start()
        return self

    def stop(self) -> None:
        for camera in self.cameras.values():
            camera.stop()

    def on_event(self, machine_id: str, kind: str, data: dict[str, Any]) -> None:
        """A publisher listener: the moments that take a picture (never blocks)."""
        moment = MOMENTS.get(kind)
        camera = self.cameras.get(machine_id)
        if moment is None or camera is None:
            return
        job_id = data.get("job_id") if isinstance(data.get("job_id"), str) else self.job_of(machine_id)
        camera.take(moment, job_id)

    def demand(self, machine_id: str, actor: str) -> bool:
        """A picture now (a manager's request): False when the machine has no camera or it is behind."""
        camera = self.cameras.get(machine_id)
        return camera is not None and camera.take("demand", self.job_of(machine_id), actor)

    def _taken(self, row: dict[str, Any], thumb: bytes) -> None:
        facts = {"job_id": row["job_id"], "snapshot_id": row["id"], "moment": row["moment"],
                 "sha256": row["sha256"], "bytes": row["bytes"], "file": Path(row["path"]).name}  # fmt: skip
        self.say(row["machine_id"], "snapshot", facts)
        if thumb:  # a timelapse's video has none: said, not shown
            picture = base64.b64encode(thumb).decode()
            self.show(row["machine_id"], {**facts, "t": row["taken_t"], "jpeg": picture})
