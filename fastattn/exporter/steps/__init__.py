"""The steps of an export, each a small object that reads and fills an :class:`~fastattn.exporter.state.ExportState`.

    prepare      a model file -> its family's graphs, records, references and validation cases
    open_export  an existing export -> the same, its own graphs the reference (optimize, quantize)
    capture      torch.onnx.export of each graph; its attention layers
    optimize     lowering, inlining, fusion, rotary folding: the target's passes
    save         the graphs into the staging directory; opsets per graph
    place        where each node runs on the target's provider (providers in other environments)
    validate     the staged graphs against the references, case by case
    quantize     quantize, gate on task accuracy, validate again
    finish       carried files, lowering plan, report, the manifest (once); commit or reject
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from fastattn.exporter.state import ExportState


class Step(ABC):
    name: ClassVar[str]

    @abstractmethod
    def run(self, state: ExportState) -> None:
        """Do this step's part of the work on ``state``."""

    def __repr__(self) -> str:
        return f"<step {self.name}>"
