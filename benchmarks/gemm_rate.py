"""This machine's int8 GEMM rate through ONNX Runtime: one MatMulInteger (uint8 x int8 -> int32).

The reference an int8 model's achieved throughput is a fraction of. Shapes: the GEMMs of a
d=384 encoder at S=128 and 512, and a large square one; the best rate is the machine's.

    python -m benchmarks.gemm_rate
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from benchmarks.timing import block_medians

SHAPES = ((128, 384, 1536), (512, 384, 1536), (512, 1536, 384), (1024, 1024, 1024))


def matmul_integer_session(m: int, k: int, n: int, threads: int) -> tuple[ort.InferenceSession, dict]:
    rng = np.random.default_rng(0)
    weight = helper.make_tensor("B", TensorProto.INT8, (k, n), rng.integers(-127, 128, (k, n), dtype=np.int8).tobytes(),
                                raw=True)  # fmt: skip
    zero = helper.make_tensor("a_zero", TensorProto.UINT8, (), [128])
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "a_zero"], ["Y"])],
        "gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, (m, k))],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, (m, n))],
        [weight, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    onnx.checker.check_model(model)
    return session, {"A": rng.integers(0, 256, (m, k), dtype=np.uint8)}


def gemm_rates(threads: int = 2, shapes: tuple[tuple[int, int, int], ...] = SHAPES) -> list[dict]:
    """GOPS (2·M·K·N per call) of MatMulInteger at each shape, median of alternating blocks."""
    rows = []
    for m, k, n in shapes:
        session, feeds = matmul_integer_session(m, k, n, threads)
        ms = block_medians({"gemm": lambda: session.run(None, feeds)}, rounds=3, block=20)["gemm"]
        rows.append({"m": m, "k": k, "n": n, "ms": round(ms, 4), "gops": round(2 * m * k * n / ms / 1e6, 1)})
    return rows


if __name__ == "__main__":
    for row in gemm_rates():
        print(row)
