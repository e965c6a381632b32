"""ONNX Runtime's failures while running a graph, as one line naming the graph and the node."""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from fastattn.errors import RunError

ORT_ERRORS = tuple(
    getattr(ort_state, n)
    for n in ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph",
              "NotImplemented", "RuntimeException", "EPFail")
    if hasattr(ort_state, n)
)  # fmt: skip


def fmt_sizes(feeds: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{name} {tuple(a.shape)}" for name, a in list(feeds.items())[:3])


def run_error(graph: str, e: BaseException, feeds: Mapping[str, np.ndarray]) -> RunError:
    """ONNX Runtime's failure while running ``graph`` as one line, naming the node it names."""
    text = " ".join(str(e).split())
    node = re.search(r"running (\w+) node\. Name:'([^']*)'", text)
    where = f" at node {node[2]!r} ({node[1]})" if node else ""
    memory = "allocate" in text.lower() or "memory" in text.lower()
    detail = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)[:300]
    fix = "run a smaller batch or shorter sequence" if memory else "check the inputs and the provider; -vv shows the trace"
    return RunError(f"ONNX Runtime failed running graph {graph!r}{where} on {fmt_sizes(feeds)}: {detail}", fix)
