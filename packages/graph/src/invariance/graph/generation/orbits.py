"""Node orbit counts of graphlets with 2-4 nodes (the 15 orbits ORCA reports with ``node 4``),
in pure Python: no compiled ORCA needed.

Orbits (Przulj's numbering, as ORCA): 0 edge end (degree); 3-node path 1 end, 2 middle;
triangle 3; 4-node path 4 end, 5 inner; star 6 leaf, 7 centre; 4-cycle 8; paw (tailed triangle)
9 tail, 10 triangle node of degree 2, 11 degree-3 node; diamond 12 degree-2 node, 13 degree-3
node; K4 14. Graphlets are *induced* connected subgraphs.

:func:`orbit_counts` enumerates each connected induced 3- and 4-node subgraph once with Wernicke's
ESU extension (cost ~ the number of such subgraphs); :func:`orbit_counts_bruteforce` checks every
3- and 4-subset and is the reference the tests compare against.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np


def _adjacency(graph) -> tuple[int, list[set[int]]]:
    """``(n, neighbour sets)`` of a networkx graph (nodes relabelled 0..n-1 in node order)."""
    nodes = list(graph.nodes())
    idx = {u: i for i, u in enumerate(nodes)}
    nbrs: list[set[int]] = [set() for _ in nodes]
    for u, v in graph.edges():
        if u == v:
            raise ValueError("graph has self-loops; orbit counts are defined for simple graphs")
        nbrs[idx[u]].add(idx[v])
        nbrs[idx[v]].add(idx[u])
    return len(nodes), nbrs


def _classify(sub: tuple[int, ...], nbrs: list[set[int]], out: np.ndarray) -> None:
    """Add the orbits of the connected induced subgraph on ``sub`` (3 or 4 nodes) to ``out``."""
    deg = [sum(1 for w in sub if w != v and w in nbrs[v]) for v in sub]
    m = sum(deg) // 2
    if len(sub) == 3:
        if m == 3:
            for v in sub:
                out[v, 3] += 1
        elif m == 2:
            for v, d in zip(sub, deg):
                out[v, 2 if d == 2 else 1] += 1
        return
    if 0 in deg:  # disconnected (triangle + isolated node, or fewer edges)
        return
    if m == 3:
        star = 3 in deg
        for v, d in zip(sub, deg):
            out[v, (7 if d == 3 else 6) if star else (4 if d == 1 else 5)] += 1
    elif m == 4:
        cycle = max(deg) == 2
        for v, d in zip(sub, deg):
            out[v, 8 if cycle else {1: 9, 2: 10, 3: 11}[d]] += 1
    elif m == 5:
        for v, d in zip(sub, deg):
            out[v, 12 if d == 2 else 13] += 1
    elif m == 6:
        for v in sub:
            out[v, 14] += 1


def orbit_counts(graph) -> np.ndarray:
    """``(n, 15)`` int64 orbit counts of a networkx graph (ORCA ``node 4`` equivalent)."""
    n, nbrs = _adjacency(graph)
    out = np.zeros((n, 15), dtype=np.int64)
    for v in range(n):
        out[v, 0] = len(nbrs[v])

    # ESU: each connected induced subgraph of size <= 4 is reached exactly once from its
    # smallest node v, extending only with nodes > v that are exclusive neighbours.
    def extend(sub: tuple[int, ...], ext: set[int], v: int, nb_sub: set[int]) -> None:
        if len(sub) >= 3:
            _classify(sub, nbrs, out)
        if len(sub) == 4:
            return
        ext = set(ext)
        while ext:
            w = ext.pop()
            new_ext = set(ext)
            for u in nbrs[w]:
                if u > v and u not in nb_sub and u not in sub:
                    new_ext.add(u)
            extend(sub + (w,), new_ext, v, nb_sub | nbrs[w] | {w})

    for v in range(n):
        extend((v,), {u for u in nbrs[v] if u > v}, v, nbrs[v] | {v})
    return out


def orbit_counts_bruteforce(graph) -> np.ndarray:
    """Reference: the same counts by checking every 3- and 4-subset (use on small graphs)."""
    n, nbrs = _adjacency(graph)
    out = np.zeros((n, 15), dtype=np.int64)
    for v in range(n):
        out[v, 0] = len(nbrs[v])
    for k in (3, 4):
        for sub in combinations(range(n), k):
            deg = [sum(1 for w in sub if w != v and w in nbrs[v]) for v in sub]
            m = sum(deg) // 2
            if (k == 3 and m >= 2) or (k == 4 and m >= 3 and 0 not in deg):
                _classify(sub, nbrs, out)
    return out
