"""What an export is lowered for (kept free of heavy imports: the CLI reads it at start-up)."""

from __future__ import annotations

from enum import Enum


class Target(str, Enum):
    """What an export is lowered for: an execution provider, or nothing (portable)."""

    PORTABLE = "portable"
    CPU = "cpu"
    OPENVINO = "openvino"
    CUDA = "cuda"

    @property
    def provider(self) -> str:
        """The runtime's short provider name measurements and validation use."""
        return "cpu" if self is Target.PORTABLE else self.value

    @property
    def contrib_ops(self) -> bool:
        """Whether ORT's com.microsoft contrib ops may appear (OpenVINO EP does not run them)."""
        return self in (Target.CPU, Target.CUDA)
