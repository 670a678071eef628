"""A machine's console settings (`[machines.console]`): jog feeds, touch plate, safe height, tool-change
place, framing, preheat and filament, the screen's language. One pydantic model serves as the file's
table (config_model.py) and as the settings the machine thread reads."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

LANGUAGES = ("fr", "en")
Positive = Annotated[float, Field(gt=0)]


def _axes(place: dict[str, float]) -> dict[str, float]:
    if not set(place) <= {"X", "Y", "Z"}:
        raise ValueError("a table of X, Y, Z numbers (machine coordinates)")
    return place


class ConsoleSettings(BaseModel):
    """Frozen: the machine thread keeps the instance it was given; a reload hands it a new one."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    language: Literal["fr", "en"] = Field(
        "fr", description="the screen's language until the member switches it"
    )
    jog_feed: Positive = Field(1000.0, description="mm/min, X and Y")
    jog_feed_z: Positive = Field(300.0, description="mm/min, Z")
    jog_steps: list[Positive] = Field(
        [0.1, 1.0, 10.0], min_length=1, max_length=6, description="the step sizes offered, mm (up to 6)"
    )
    plate_mm: float = Field(20.0, ge=0, le=100, description="the touch plate's thickness")
    probe_feed: float = Field(50.0, gt=0, le=500, description="mm/min toward the plate")
    probe_depth: Positive = Field(
        30.0, description="how far down a probe looks for the plate before it fails"
    )
    retract_mm: Positive = Field(5.0, description="above the plate after a probe")
    safe_z: float | None = Field(None, description="machine Z for rapid moves (default: 1 mm below the top)")
    tool_change: Annotated[dict[str, float], AfterValidator(_axes)] = Field(
        default_factory=dict,
        description="machine X, Y (and Z) where tools are changed, e.g. { X = -10, Y = -10 }",
    )
    frame_feed: Positive = Field(1500.0, description="mm/min while tracing the job's box")
    frame_power: float = Field(0.0, ge=0, description="a laser traces the box at this S (0: beam off)")
    filament_mm: float = Field(80.0, gt=0, le=800, description="load and unload length")
    filament_feed: Positive = Field(300.0, description="mm/min for load and unload")
    min_extrude_c: Positive = Field(
        170.0, description="below this a load or unload is refused (cold extrusion)"
    )
    raise_mm: float = Field(10.0, gt=0, le=100, description="the Raise Z button's height")
    babystep_training: str | None = Field(
        None, description="the training that allows babysteps (M290); unset: anyone in a session"
    )
    babystep_until_layer_s: Positive = Field(600.0, description="babysteps only in a job's first minutes")
