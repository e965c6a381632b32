"""Where each node of an exported graph runs, read from an ONNX Runtime profile.

A provider takes the nodes it supports (OpenVINO fuses them into ``OpenVINO-EP-subgraph``
nodes); the rest fall back to the next provider, usually the CPU EP, silently. This runs
each graph once on small sample inputs with profiling on and reports, per provider, how
many kernels ran there, and lists every node that fell back.

It is also a worker: a provider may live in another Python environment (OpenVINO EP ships
its own onnxruntime), so ``python -m fastattn.runtime.placement DIR --provider openvino``
prints the result as JSON for the exporter to read (``--manifest -`` reads the manifest from
stdin: an export being staged has none on disk yet). Needs only onnxruntime and numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fastattn.runtime.manifest import Manifest
from fastattn.runtime.providers import resolve
from fastattn.runtime.records import Placement
from fastattn.runtime.samples import sample_inputs
from fastattn.runtime.session import graph_dims

SAMPLE_SIZES = {"batch": 1, "sequence": 8, "past_sequence": 4, "encoder_sequence": 8}


__all__ = ["Placement", "placement"]


def placement(directory: str | os.PathLike, provider: str, graph: str | None = None,
              manifest: Manifest | None = None) -> list[Placement]:  # fmt: skip
    """The placement of every graph (or the one named) of an export on ``provider``."""
    manifest = manifest or Manifest.load(directory)
    entries = [manifest.graph(graph)] if graph else manifest.graphs
    providers = resolve([provider])
    requested = providers[0] if isinstance(providers[0], str) else providers[0][0]
    results = []
    for entry in entries:
        sizes = {d: SAMPLE_SIZES.get(d, 8) for d in graph_dims(entry)}
        feeds = sample_inputs(entry.inputs, sizes, np.random.default_rng(0))
        with tempfile.TemporaryDirectory() as tmp:
            options = ort.SessionOptions()
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / "profile")
            options.log_severity_level = 3
            session = ort.InferenceSession(str(manifest.path_of(directory, entry.file)), options, providers=providers)
            session.run(None, feeds)
            events = json.loads(Path(session.end_profiling()).read_text())
        kernels: Counter[str] = Counter()
        fallback = []
        for event in events:
            if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
                continue
            args = event.get("args", {})
            where = args.get("provider", "?")
            kernels[where] += 1
            if where != requested:
                fallback.append(f"{args.get('op_name', '?')} {event['name'].removesuffix('_kernel_time')}")
        results.append(Placement(entry.name, requested, session.get_providers(), dict(kernels), sorted(set(fallback))))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--provider", required=True)
    parser.add_argument("--graph", default=None)
    parser.add_argument("--manifest", default=None, help="- reads the manifest (JSON) from stdin")
    args = parser.parse_args(argv)
    from fastattn.errors import FastAttnError

    try:
        manifest = Manifest.from_dict(json.loads(sys.stdin.read())) if args.manifest == "-" else None
        result = placement(args.directory, args.provider, args.graph, manifest)
    except FastAttnError as e:
        print(json.dumps({"error": str(e)}))
        return e.exit_code
    print(json.dumps([asdict(p) for p in result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
