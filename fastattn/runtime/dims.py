"""Named dynamic dims of the manifest, and the expressions built from them.

    batch                             a name: its size is given (or read from an input)
    past_sequence+sequence            a sum of names
    min(past_sequence,255)            a sum of names, capped: the cache of a windowed layer
    summarized(past_sequence,64)      a sum of names a, as ⌊a/64⌋ + a mod 64: the cache of a
                                      hierarchical layer (one summary per complete block of
                                      64, then the keys of the open block)

Everything that reads a shape from a manifest (samples, input checks, apps) goes through
:func:`size` and :func:`names` rather than parsing the strings itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_CAPPED = re.compile(r"^min\((?P<sum>[^,()]+),(?P<cap>\d+)\)$")
_SUMMARIZED = re.compile(r"^summarized\((?P<sum>[^,()]+),(?P<block>\d+)\)$")


@dataclass(frozen=True)
class DimExpr:
    parts: tuple[str, ...]  # names added together
    cap: int | None = None  # the size is at most this
    block: int | None = None  # the sum a is held as ⌊a/block⌋ + a mod block

    def size(self, sizes: Mapping[str, int]) -> int:
        total = sum(sizes[p] for p in self.parts)
        if self.block is not None:
            return total // self.block + total % self.block
        return total if self.cap is None else min(total, self.cap)

    @property
    def solvable(self) -> bool:
        """Whether one unknown part follows from the size (a sum, or capped below its cap; a summarized
        size has many sums)."""
        return self.block is None


def parse(dim: str) -> DimExpr:
    text = dim.replace(" ", "")
    match = _CAPPED.match(text)
    if match:
        return DimExpr(_parts(match["sum"]), int(match["cap"]))
    match = _SUMMARIZED.match(text)
    if match:
        return DimExpr(_parts(match["sum"]), block=int(match["block"]))
    return DimExpr(_parts(dim))


def capped(dim: str, cap: int) -> str:
    """The dim ``dim`` capped at ``cap`` (0: not capped)."""
    return f"min({dim},{cap})" if cap else dim


def summarized(dim: str, block: int) -> str:
    """The dim ``dim`` held as block summaries + the open block (0: as it is)."""
    return f"summarized({dim},{block})" if block else dim


def size(dim: int | str, sizes: Mapping[str, int]) -> int:
    """The size of a fixed or named dim, given the size of each name."""
    return dim if isinstance(dim, int) else parse(dim).size(sizes)


def names(dim: int | str) -> tuple[str, ...]:
    """The names a dim is made of (none for a fixed size)."""
    return () if isinstance(dim, int) else parse(dim).parts


def _parts(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split("+"))
