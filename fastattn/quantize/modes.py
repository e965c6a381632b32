"""The registry of quantization modes (one :class:`~fastattn.quantize.base.ModeSpec` per mode module)."""

from __future__ import annotations

from fastattn.quantize import dynamic, fp16, int4, static
from fastattn.quantize.base import ModeSpec
from fastattn.quantize.options import Mode

MODES: dict[Mode, ModeSpec] = {spec.mode: spec for spec in (dynamic.MODE, static.MODE, int4.MODE, fp16.MODE)}
