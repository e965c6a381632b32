"""What declaring attention returns, shared by both routes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class DeclareResult:
    """The model to capture, the number of attention calls declared and why the others were not."""

    module: nn.Module | torch.export.ExportedProgram
    declared: int
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """``declared 4 attention calls; 1 left decomposed: <reason>``, for the report."""
        text = f"declared {self.declared} attention call{'s' * (self.declared != 1)}"
        if self.reasons:
            text += f"; {len(self.reasons)} left decomposed: " + "; ".join(self.reasons)
        return text


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if empty), for a one-line reason."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
