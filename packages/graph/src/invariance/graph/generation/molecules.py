"""Molecules for generation: a small QM9-like set from the NCI sample inside the rdkit wheel
(``rdkit/Data/NCI/first_5K.smi``: parses, one fragment, neutral, heavy atoms in {C, N, O, F},
at most ``max_atoms``), graph <-> molecule conversion (kekulised single/double/triple bonds,
implicit hydrogens), the field's validity / uniqueness / novelty (DiGress/PARD
``rdkit_functions``: a molecule is valid when the SMILES of its largest fragment sanitises) and an
Erdos-Renyi baseline that respects valences."""

from __future__ import annotations

import functools
import os

import torch
from torch_geometric.data import Data

from invariance.graph._checks import check_int

ATOMS = ("C", "N", "O", "F")
BONDS = ("SINGLE", "DOUBLE", "TRIPLE")
VALENCE = (4, 3, 2, 1)


@functools.lru_cache(maxsize=4)
def _nci(max_atoms: int) -> tuple[str, ...]:
    import rdkit
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    path = os.path.join(os.path.dirname(rdkit.__file__), "Data", "NCI", "first_5K.smi")
    out = set()
    with open(path) as fh:
        for line in fh:
            m = Chem.MolFromSmiles(line.split()[0]) if line.strip() else None
            if m is None or len(Chem.GetMolFrags(m)) != 1 or m.GetNumAtoms() > max_atoms:
                continue
            if any(a.GetSymbol() not in ATOMS or a.GetFormalCharge() for a in m.GetAtoms()):
                continue
            out.add(Chem.MolToSmiles(m))
    return tuple(sorted(out))


def qm9_mini(max_atoms: int = 9) -> list[str]:
    """Canonical SMILES (sorted) of the NCI molecules with <= ``max_atoms`` heavy C/N/O/F atoms
    (412 at the default 9)."""
    return list(_nci(check_int("max_atoms", max_atoms, lo=2)))


def smiles_to_data(smiles: str) -> Data:
    """``Data(x = atom type ids, edge_index, edge_attr = bond type ids)`` of a kekulised
    molecule."""
    from rdkit import Chem

    if not isinstance(smiles, str):
        raise TypeError(f"smiles must be a string, got {type(smiles).__name__}")
    m = Chem.MolFromSmiles(smiles)
    if m is None:
        raise ValueError(f"smiles does not parse: {smiles!r}")
    Chem.Kekulize(m, clearAromaticFlags=True)
    x = []
    for a in m.GetAtoms():
        if a.GetSymbol() not in ATOMS:
            raise ValueError(f"smiles has an unknown atom type {a.GetSymbol()!r} (allowed {ATOMS})")
        x.append(ATOMS.index(a.GetSymbol()))
    rows, attr = [], []
    for b in m.GetBonds():
        t = BONDS.index(str(b.GetBondType()))
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        rows += [(i, j), (j, i)]
        attr += [t, t]
    ei = torch.tensor(rows, dtype=torch.long).reshape(-1, 2).t()
    return Data(
        x=torch.tensor(x),
        edge_index=ei,
        edge_attr=torch.tensor(attr, dtype=torch.long),
        num_nodes=len(x),
    )


def graph_to_smiles(x: torch.Tensor, adj: torch.Tensor) -> str | None:
    """SMILES of the largest fragment of the molecule with atom ids ``x`` (n,) and bond class
    matrix ``adj`` (n, n; 0 none, 1 + bond id), or ``None`` when it does not sanitise."""
    from rdkit import Chem

    rw = Chem.RWMol()
    for a in x.tolist():
        rw.AddAtom(Chem.Atom(ATOMS[int(a)]))
    n = len(x)
    for i in range(n):
        for j in range(i):
            c = int(adj[i, j])
            if c > 0:
                rw.AddBond(i, j, getattr(Chem.BondType, BONDS[c - 1]))
    try:
        mol = rw.GetMol()
        Chem.SanitizeMol(mol)
        frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=True)
        big = max(frags, key=lambda f: f.GetNumAtoms())
        smi = Chem.MolToSmiles(big)
        return smi if Chem.MolFromSmiles(smi) is not None else None
    except Exception:  # noqa: BLE001  (rdkit raises several sanitisation errors)
        return None


def molecule_metrics(smiles: list, train_smiles: list) -> dict[str, float]:
    """``validity`` (valid / generated), ``uniqueness`` (unique valid / valid), ``novelty``
    (unique valid not in training / unique valid); ``None`` entries are invalid molecules."""
    if not isinstance(smiles, (list, tuple)) or not smiles:
        raise ValueError("smiles must be a non-empty list (None for invalid molecules)")
    valid = [s for s in smiles if s is not None]
    uniq = set(valid)
    train = set(train_smiles)
    return {
        "validity": len(valid) / len(smiles),
        "uniqueness": len(uniq) / len(valid) if valid else 0.0,
        "novelty": len(uniq - train) / len(uniq) if uniq else 0.0,
    }


def er_valence_molecules(train: list, n: int, seed: int = 0) -> list:
    """Erdos-Renyi molecules that respect valences: for each sample, the atom and bond counts of a
    random training molecule (PyG ``Data`` with ``x`` atom ids and ``edge_attr`` bond ids), atom
    types drawn from the training atom marginal, then bonds placed one by one on uniformly random
    pairs that still have free valence, the bond order drawn from the training bond marginal and
    capped by the free valence of both atoms. Returns ``(atom ids (n,), bond class matrix)``
    pairs like :meth:`invariance.graph.PARD.generate` (class 0 = none, ``1 + bond id``)."""
    import numpy as np

    if not isinstance(train, (list, tuple)) or not train:
        raise ValueError("train must be a non-empty list of molecule graphs")
    n = check_int("n", n, lo=1)
    seed = check_int("seed", seed, lo=0)
    if any(getattr(d, "x", None) is None or getattr(d, "edge_attr", None) is None for d in train):
        raise ValueError("train graphs need x (atom ids) and edge_attr (bond ids)")
    atoms = torch.cat([d.x for d in train]).bincount(minlength=len(ATOMS)).double()
    bonds = torch.cat([d.edge_attr for d in train]).bincount(minlength=len(BONDS)).double()
    pa, pb = (atoms / atoms.sum()).numpy(), (bonds / bonds.sum()).numpy()
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(train), n):
        d = train[int(i)]
        na, nb = int(d.num_nodes), d.edge_index.size(1) // 2
        x = rng.choice(len(ATOMS), na, p=pa)
        free = np.array([VALENCE[a] for a in x])
        adj = torch.zeros(na, na, dtype=torch.long)
        for _ in range(nb):
            pairs = [(u, v) for u in range(na) for v in range(u) if adj[u, v] == 0]
            pairs = [(u, v) for u, v in pairs if free[u] > 0 and free[v] > 0]
            if not pairs:
                break
            u, v = pairs[int(rng.integers(len(pairs)))]
            cap = min(int(free[u]), int(free[v]), len(BONDS))
            order = 1 + int(rng.choice(cap, p=pb[:cap] / pb[:cap].sum()))
            adj[u, v] = adj[v, u] = order
            free[u] -= order
            free[v] -= order
        out.append((torch.as_tensor(x), adj))
    return out
