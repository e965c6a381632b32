"""Lowering candidates of one attention node measured on onnxruntime-web (target ``wasm``).

The same contract as :func:`fastattn.exporter.lowering.measure.measure`: every rule is lowered into
a one-node model, checked against the portable function body on the same inputs (a candidate that
disagrees or fails to load is rejected with the reason) and timed at each shape of the profile,
rounds alternating the order. Only the place differs: the models run in Node on onnxruntime-web's
WebAssembly EP, through the worker (``worker.mjs``, op ``candidates``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from fastattn.errors import ExportError
from fastattn.exporter.lowering.base import AttentionSite, LoweringRule
from fastattn.exporter.lowering.measure import Measurement, ShapeCase, candidate_model, feeds_for
from fastattn.exporter.lowering.portable import PORTABLE
from fastattn.runtime.timing import ROUNDS, TOLERANCE
from fastattn.runtime.web.node import runtime, write_tensors


def measure(
    site: AttentionSite,
    rules: Sequence[LoweringRule],
    cases: Sequence[ShapeCase],
    provider: str,
    opset: int,
    repeats: int = 10,
    threads: int | None = None,
) -> list[Measurement]:
    """Time every rule at every case on onnxruntime-web's ``provider``; check each against the portable body."""
    web = runtime()
    with tempfile.TemporaryDirectory(prefix="fastattn-web-lowering-") as tmp:
        models = {}
        for rule in dict.fromkeys([PORTABLE, *rules]):
            models[rule.name] = str(Path(tmp) / f"{rule.name}.onnx")
            Path(models[rule.name]).write_bytes(candidate_model(site, rule, opset))
        request = {
            "op": "candidates", "provider": provider, "threads": threads or 0, "models": models,
            "reference": PORTABLE.name, "repeats": repeats, "rounds": ROUNDS,
            "cases": [{"name": c.name, "inputs": write_tensors(feeds_for(site, c), Path(tmp), c.name)} for c in cases],
        }  # fmt: skip
        reply = web.call(request, timeout=1800)
    if not reply["ok"]:
        raise ExportError(f"measuring {site.layer} on onnxruntime-web ({provider}) failed: {reply['error']}",
                          "export with --lowering RULE to skip the measurement")  # fmt: skip
    failed = reply["result"]["failed"]
    results = []
    for case in reply["result"]["cases"]:
        for rule in rules:
            got = case["results"].get(rule.name) or {"error": f"failed to load: {failed.get(rule.name, '?')}"}
            if "error" in got:
                results.append(Measurement(rule.name, case["name"], None, reason=got["error"][:200]))
            elif not got["max_abs"] <= TOLERANCE * max(got["scale"], 1.0):
                results.append(Measurement(rule.name, case["name"], None, got["max_abs"],
                                           f"differs from the function body by {got['max_abs']:.2e}"))  # fmt: skip
            else:
                results.append(Measurement(rule.name, case["name"], got["ms"], got["max_abs"]))
    return results
