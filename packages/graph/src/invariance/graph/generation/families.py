"""Small generic graph families for generation (GraphRNN/PARD generator recipes, seeded) and the
64/16/20 split of PARD's ``simulated_graph.py`` (seeded shuffle; test = 20 %, train = 80 % of the
rest, validation = the remainder)."""

from __future__ import annotations

import random

import networkx as nx
import numpy as np
import torch
from torch_geometric.data import Data

from invariance.graph._checks import check_int

FAMILIES = ("grid_small", "caveman_small", "community2", "ladder_small", "tree", "sbm", "planar")


def _caveman_special(rng: np.random.Generator, c: int, k: int, p_edge: float) -> nx.Graph:
    """GraphRNN's ``caveman_special``: ``c`` caves of ``k``, intra edges kept w.p. ``p_edge``,
    ``ceil(0.1 k)`` links between the first two caves, largest component."""
    g = nx.caveman_graph(c, k)
    for u, v in list(g.edges()):
        if rng.random() < 1 - p_edge and ((u < k and v < k) or (u >= k and v >= k)):
            g.remove_edge(u, v)
    for _ in range(max(int(np.ceil(0.1 * k)), 1)):
        g.add_edge(int(rng.integers(0, k)), int(rng.integers(k, 2 * k)))
    return nx.convert_node_labels_to_integers(g.subgraph(max(nx.connected_components(g), key=len)))


def _community(rng: np.random.Generator, sizes, p_inter: float = 0.01) -> nx.Graph:
    gs = [nx.gnp_random_graph(int(s), 0.7, seed=int(rng.integers(1 << 30))) for s in sizes]
    g = nx.disjoint_union_all(gs)
    comps = [list(c) for c in nx.connected_components(g)]
    for i in range(len(comps)):
        for j in range(i + 1, len(comps)):
            linked = False
            for a in comps[i]:
                for b in comps[j]:
                    if rng.random() < p_inter:
                        g.add_edge(a, b)
                        linked = True
            if not linked:
                g.add_edge(comps[i][0], comps[j][0])
    return g


def make_family(name: str, n: int | None = None, seed: int = 0) -> list[nx.Graph]:
    """Graphs of one family (nodes relabelled ``0..n-1``). ``n`` caps / sets the count where the
    family is random (caveman, community, sbm, planar); grid/ladder/tree are enumerations."""
    if name not in FAMILIES:
        raise ValueError(f"name must be one of {FAMILIES}, got {name!r}")
    seed = check_int("seed", seed, lo=0)
    if n is not None:
        n = check_int("n", n, lo=1)
    rng = np.random.default_rng(seed)
    if name == "grid_small":
        gs = [nx.grid_2d_graph(i, j) for i in range(2, 20) for j in range(2, 8)]
    elif name == "ladder_small":
        gs = [nx.ladder_graph(i) for i in range(2, 11)]
    elif name == "tree":
        gs = [nx.balanced_tree(i, j) for i in range(2, 5) for j in range(3, 5)]
    elif name == "caveman_small":
        gs = [
            _caveman_special(rng, 2, k, 0.8)
            for k in range(6, 11)
            for _ in range(-(-(n or 500) // 5))
        ]
    elif name == "community2":
        gs = [_community(rng, rng.choice(np.arange(15, 30), 2)) for _ in range(n or 100)]
    elif name == "sbm":
        gs = []
        for _ in range(n or 100):
            k = int(rng.integers(2, 4))
            sizes = [int(s) for s in rng.integers(4, 8, k)]
            p = np.full((k, k), 0.05) + np.eye(k) * 0.65
            gs.append(nx.stochastic_block_model(sizes, p.tolist(), seed=int(rng.integers(1 << 30))))
    else:  # planar: Delaunay triangulation of random points
        from scipy.spatial import Delaunay

        gs = []
        for _ in range(n or 100):
            pts = rng.random((int(rng.integers(8, 16)), 2))
            g = nx.Graph()
            g.add_nodes_from(range(len(pts)))
            for s in Delaunay(pts).simplices:
                g.add_edges_from([(s[0], s[1]), (s[1], s[2]), (s[0], s[2])])
            gs.append(g)
    gs = [nx.convert_node_labels_to_integers(nx.Graph(g)) for g in gs]
    return gs[:n] if n is not None else gs


def split_graphs(graphs: list, seed: int = 0) -> tuple[list, list, list]:
    """``(train, val, test)`` = 64/16/20 % after a seeded shuffle (PARD's split)."""
    if not isinstance(graphs, (list, tuple)) or len(graphs) < 3:
        raise ValueError("graphs must be a list of at least 3 graphs")
    seed = check_int("seed", seed, lo=0)
    gs = list(graphs)
    random.Random(seed).shuffle(gs)
    n = len(gs)
    test_len = int(round(n * 0.2))
    train_len = int(round((n - test_len) * 0.8))
    return gs[:train_len], gs[train_len + test_len :], gs[train_len : train_len + test_len]


def nx_to_data(g: nx.Graph) -> Data:
    """A networkx graph as a PyG ``Data`` (symmetric ``edge_index``, no features)."""
    if not isinstance(g, nx.Graph):
        raise TypeError(f"g must be a networkx graph, got {type(g).__name__}")
    g = nx.convert_node_labels_to_integers(g)
    e = torch.tensor(list(g.edges()), dtype=torch.long).reshape(-1, 2).t()
    ei = torch.cat([e, e.flip(0)], 1) if e.numel() else e.reshape(2, 0)
    return Data(edge_index=ei, num_nodes=g.number_of_nodes())


def data_to_nx(d: Data) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(range(int(d.num_nodes)))
    g.add_edges_from(d.edge_index.t().tolist())
    return g
