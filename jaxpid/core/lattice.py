"""The Williams–Beer redundancy lattice over k sources and Möbius inversion on it
(docs/method.md#more-than-two-sources).

A node is an antichain of non-empty source subsets (no element contains another), each subset
a bitmask over the sources (bit j ⇔ source j+1). α ≤ β iff every element of β contains some
element of α. Given a redundancy R(α) for every node, the PID atoms π solve
R(α) = Σ_{β ≤ α} π(β); the atoms of all nodes sum to R(top) = the joint information.
Counts: 4 nodes for k=2, 18 for k=3, 166 for k=4.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from jaxpid.errors import ConfigError

MAX_SOURCES = 4  # 7,579 nodes at k=5: allowed only with an explicit opt-in
# The k = 2 atoms by name: the column names of sweep tables and the words of every label.
TWO_SOURCE_ATOMS = {"{1}{2}": "redundancy", "{1}": "unique_1", "{2}": "unique_2", "{12}": "synergy"}


@dataclasses.dataclass(frozen=True)
class Lattice:
    k: int
    nodes: tuple[tuple[int, ...], ...]  # each node: sorted tuple of subset bitmasks
    names: tuple[str, ...]  # "{1}{23}" style, same order as nodes
    order: np.ndarray  # (A, A) bool, order[a, b] = nodes[b] <= nodes[a]
    mobius: np.ndarray  # (A, A) int, atoms = mobius @ redundancies

    @property
    def size(self) -> int:
        return len(self.nodes)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ConfigError(f"{name!r} is not a node of the k={self.k} lattice; nodes: {self.names}") from None

    @property
    def top(self) -> int:
        """The node {1..k}: its redundancy is the joint information."""
        return self.nodes.index(((1 << self.k) - 1,))

    @property
    def bottom(self) -> int:
        """The node {1}{2}...{k}: redundancy shared by all sources."""
        return self.nodes.index(tuple(1 << j for j in range(self.k)))

    def atoms(self, redundancy: np.ndarray) -> np.ndarray:
        """Möbius inversion: redundancy (..., A) in node order -> atoms (..., A)."""
        return np.einsum("ab,...b->...a", self.mobius, redundancy)


def atom_label(name: str, words: Sequence[str]) -> str:
    """A lattice node named for people: '{1}{2}' -> 'redundancy', '{1}' -> 'unique: red',
    '{12}' -> 'synergy' (k = 2); other k: the words in braces, '{red}{circle square}'."""
    if len(words) == 2 and name in TWO_SOURCE_ATOMS:
        return {"{1}": f"unique: {words[0]}", "{2}": f"unique: {words[1]}"}.get(name, TWO_SOURCE_ATOMS[name])
    return "".join("{" + " ".join(words[int(d) - 1] for d in part) + "}" for part in name.strip("{}").split("}{"))


def subset_name(mask: int) -> str:
    return "".join(str(j + 1) for j in range(mask.bit_length()) if mask >> j & 1)


def node_name(node: tuple[int, ...]) -> str:
    return "".join("{" + s + "}" for s in sorted(subset_name(m) for m in node))


@functools.lru_cache(maxsize=None)
def redundancy_lattice(k: int, *, allow_large: bool = False) -> Lattice:
    """The lattice for k sources (cached). k > 4 needs ``allow_large=True``."""
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"the number of sources must be a positive integer, got {k!r}")
    if k > MAX_SOURCES and not allow_large:
        raise ConfigError(
            f"k={k} sources: the redundancy lattice has {'7,579' if k == 5 else 'millions of'} nodes "
            f"and needs 2**{k} conditionings per sample; pass allow_large=True if you mean it"
        )
    subsets = list(range(1, 1 << k))
    nodes: list[tuple[int, ...]] = []

    def extend(chosen: list[int], start: int) -> None:
        if chosen:
            nodes.append(tuple(chosen))
        for i in range(start, len(subsets)):
            s = subsets[i]
            if all(not _comparable(s, c) for c in chosen):
                extend(chosen + [s], i + 1)

    extend([], 0)
    # Bottom-up: by the number of nodes below (redundancy of all sources first, joint last).
    below = {n: sum(_leq(m, n) for m in nodes) for n in nodes}
    nodes.sort(key=lambda n: (below[n], node_name(n)))
    names = tuple(node_name(n) for n in nodes)
    order = np.array([[_leq(b, a) for b in nodes] for a in nodes], dtype=bool)
    # order (as a 0/1 matrix) is the zeta matrix: R = zeta @ atoms. It is unitriangular in a
    # topological order, so its inverse is an exact integer matrix.
    mobius = np.rint(np.linalg.inv(order.astype(np.float64))).astype(np.int64)
    if not np.array_equal(mobius @ order.astype(np.int64), np.eye(len(nodes), dtype=np.int64)):
        raise AssertionError("Möbius inversion of the redundancy lattice is not exact")  # pragma: no cover
    return Lattice(k, tuple(nodes), names, order, mobius)


def _comparable(a: int, b: int) -> bool:
    return (a & b) == a or (a & b) == b


def _leq(alpha: tuple[int, ...], beta: tuple[int, ...]) -> bool:
    """alpha <= beta: every element of beta contains some element of alpha."""
    return all(any((a & b) == a for a in alpha) for b in beta)
