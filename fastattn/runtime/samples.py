"""Sample inputs made from a manifest's tensor specs (validation, bench, ``fastattn run --random``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastattn.runtime.manifest import Fill, TensorSpec


def sample_inputs(
    specs: Sequence[TensorSpec], sizes: dict[str, int], rng: np.random.Generator, padded: bool = False
) -> dict[str, np.ndarray]:
    """One array per spec at the given dim sizes.

    With ``padded``, mask rows after the first are left-padded (leading zeros), row b by
    ``b·T/(2B)`` positions, so batches mix lengths the way a padded batch does.
    """
    out = {}
    for spec in specs:
        shape = spec.concrete_shape(sizes)
        dtype = np.dtype(spec.dtype)
        if spec.fill is Fill.TOKENS:
            arr = rng.integers(0, max(spec.high, 1), size=shape).astype(dtype)
        elif spec.fill is Fill.MASK:
            arr = np.ones(shape, dtype=dtype)
            if padded and len(shape) == 2:
                rows, cols = shape
                for b in range(1, rows):
                    arr[b, : b * cols // (2 * rows)] = 0
        elif spec.fill is Fill.ZEROS or dtype == np.bool_:
            arr = np.zeros(shape, dtype=dtype)
        else:
            arr = rng.standard_normal(size=shape).astype(dtype)
        out[spec.name] = arr
    return out
