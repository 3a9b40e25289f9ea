r"""Mol-Motif: real molecules labelled by a substructure, with ground-truth rationale atoms.

Molecules come from the NCI sample that ships inside the rdkit wheel
(``rdkit/Data/NCI/first_5K.smi``), so nothing is downloaded. Filter: parses, one fragment,
neutral, atoms in {C, N, O, F}, 4..20 heavy atoms (2,110 molecules with rdkit 2026.09). The label
is the presence of a SMARTS group (default ``[CX3](=O)[OX2H1,OX2]``: a C(=O)O group, i.e. a
carboxylic acid, ester or carbamate); the ground-truth rationale is the union of the
matched atoms (``node_mask``) and the bonds between them (``edge_mask``).

Distribution shifts [ours, spec §1.3]: a *size shift* (train/val <= ``size_split`` heavy atoms, test
larger) and a *spurious correlate* in training only: the subset is resampled so that "has a ring"
agrees with the label with probability ``bias`` (ring membership is an atom feature, so it is an
easy shortcut); the test split is not resampled. The ring correlate alone separates nothing (every
model, ERM included, reaches ~1.0 OOD accuracy: the C(=O)O group is easier to detect than
rings). ``tag_shortcut=True`` [ours] adds the analogue of Spurious-Motif's base colour: two extra
atom features, a one-hot "tag" ``t`` per molecule on every atom outside the rationale
(``t = label`` with probability ``bias`` in train/val, uniform on test), uniformly random per atom
inside the rationale. It is a 0-hop, label-correlated shortcut that the test split breaks; the
ground-truth masks are still the substructure match.

Atom features (12): one-hot C/N/O/F, one-hot degree 1..4 (0 folded into 1), aromatic, in ring,
number of hydrogens > 0, formal constant 1. Bond features (4): one-hot
single/double/triple/aromatic.
rdkit is imported inside the functions only.
"""

from __future__ import annotations

import functools
import os

import torch
from torch_geometric.data import Data

DEFAULT_SMARTS = "[CX3](=O)[OX2H1,OX2]"
_ATOMS = ("C", "N", "O", "F")


@functools.lru_cache(maxsize=4)
def _load(smarts: str) -> tuple[tuple, ...]:
    """Parse the rdkit NCI sample once: tuples (smiles, n_atoms, label, has_ring, match_atoms)."""
    try:
        import rdkit
        from rdkit import Chem, RDLogger
    except ImportError as e:  # pragma: no cover - rdkit is a declared dependency
        raise ImportError("make_mol_motif needs rdkit (pip install rdkit)") from e
    RDLogger.DisableLog("rdApp.*")
    pat = Chem.MolFromSmarts(smarts)
    if pat is None:
        raise ValueError(f"invalid SMARTS {smarts!r}")
    path = os.path.join(os.path.dirname(rdkit.__file__), "Data", "NCI", "first_5K.smi")
    if not os.path.exists(path):
        raise FileNotFoundError(f"rdkit data file not found: {path}")
    rows = []
    seen = set()
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            m = Chem.MolFromSmiles(line.split()[0])
            if m is None or len(Chem.GetMolFrags(m)) != 1:
                continue
            if not 4 <= m.GetNumAtoms() <= 20:
                continue
            if any(a.GetSymbol() not in _ATOMS or a.GetFormalCharge() != 0 for a in m.GetAtoms()):
                continue
            smi = Chem.MolToSmiles(m)
            if smi in seen:
                continue
            seen.add(smi)
            m = Chem.MolFromSmiles(smi)  # atom order of the canonical SMILES, as in mol_to_data
            matches = m.GetSubstructMatches(pat)
            atoms = tuple(sorted({i for mt in matches for i in mt}))
            has_ring = m.GetRingInfo().NumRings() > 0
            rows.append((smi, m.GetNumAtoms(), bool(matches), has_ring, atoms))
    return tuple(rows)


def mol_to_data(smiles: str, rationale_atoms: tuple[int, ...] = ()) -> Data:
    """Featurise one molecule (see module docstring) with its rationale masks."""
    from rdkit import Chem

    m = Chem.MolFromSmiles(smiles)
    if m is None:
        raise ValueError(f"cannot parse SMILES {smiles!r}")
    x = torch.zeros(m.GetNumAtoms(), 12)
    for a in m.GetAtoms():
        i = a.GetIdx()
        x[i, _ATOMS.index(a.GetSymbol()) if a.GetSymbol() in _ATOMS else 0] = 1.0
        x[i, 4 + min(max(a.GetDegree(), 1), 4) - 1] = 1.0
        x[i, 8] = float(a.GetIsAromatic())
        x[i, 9] = float(a.IsInRing())
        x[i, 10] = float(a.GetTotalNumHs() > 0)
        x[i, 11] = 1.0
    src, dst, attr = [], [], []
    kinds = {
        Chem.BondType.SINGLE: 0,
        Chem.BondType.DOUBLE: 1,
        Chem.BondType.TRIPLE: 2,
        Chem.BondType.AROMATIC: 3,
    }
    for b in m.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        f = [0.0] * 4
        f[kinds.get(b.GetBondType(), 0)] = 1.0
        src += [i, j]
        dst += [j, i]
        attr += [f, f]
    edge_index = torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)
    node_mask = torch.zeros(m.GetNumAtoms(), dtype=torch.bool)
    if rationale_atoms:
        node_mask[list(rationale_atoms)] = True
    edge_mask = node_mask[edge_index[0]] & node_mask[edge_index[1]]
    return Data(
        x=x,
        edge_index=edge_index,
        edge_attr=torch.tensor(attr, dtype=torch.float).reshape(-1, 4),
        node_mask=node_mask,
        edge_mask=edge_mask,
        smiles=smiles,
    )


def make_mol_motif(
    *,
    split: str = "train",
    seed: int = 0,
    bias: float = 0.8,
    size_split: int = 14,
    smarts: str = DEFAULT_SMARTS,
    max_graphs: int | None = None,
    tag_shortcut: bool = False,
) -> list[Data]:
    r"""Molecules from rdkit's NCI sample labelled by ``smarts`` presence, with a size shift.

    Args:
        split (str): ``"train"``/``"val"`` (<= ``size_split`` heavy atoms; an 80/20 seeded split of
            them) or ``"test"`` (> ``size_split`` heavy atoms). (default: ``"train"``)
        seed (int): seed of the split and of the spurious resampling. (default: ``0``)
        bias (float): in the training split, P(has ring == label) after resampling; ``None``-like
            values <= 0.5 disable the resampling. (default: ``0.8``)
        size_split (int): heavy-atom threshold of the size shift. (default: ``14``)
        smarts (str): the substructure that defines the label. (default: carboxylic acid/ester)
        max_graphs (int, optional): cap on the number of returned graphs (seeded subsample).
        tag_shortcut (bool): append the 2-d label-correlated tag on non-rationale atoms (P(tag =
            label) = ``bias`` in train/val, 0.5 on test; random on rationale atoms); the graph
            also gets ``tag`` (1,). (default: ``False``)

    Returns:
        list of PyG ``Data`` with ``x`` (N, 12) (N, 14 with ``tag_shortcut``), ``edge_attr``
        (E, 4), ``y`` (1,), ``node_mask``, ``edge_mask``, ``smiles``.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"bias must be in [0, 1], got {bias}")
    rows = _load(smarts)
    g = torch.Generator().manual_seed(int(seed))
    if split == "test":
        chosen = [r for r in rows if r[1] > size_split]
    else:
        small = [r for r in rows if r[1] <= size_split]
        perm = torch.randperm(len(small), generator=g).tolist()
        cut = int(0.8 * len(small))
        idx = perm[:cut] if split == "train" else perm[cut:]
        chosen = [small[i] for i in idx]
        if split == "train" and bias > 0.5:
            agree = [r for r in chosen if r[3] == r[2]]
            disagree = [r for r in chosen if r[3] != r[2]]
            keep = int(round(len(agree) * (1.0 - bias) / bias))
            keep = min(keep, len(disagree))
            dperm = torch.randperm(len(disagree), generator=g).tolist()[:keep]
            chosen = agree + [disagree[i] for i in dperm]
    if max_graphs is not None and len(chosen) > max_graphs:
        perm = torch.randperm(len(chosen), generator=g).tolist()[:max_graphs]
        chosen = [chosen[i] for i in perm]
    # the tags draw from their own stream, so tag_shortcut changes no molecule choice
    gt = torch.Generator().manual_seed(int(seed) * 7919 + {"train": 1, "val": 2, "test": 3}[split])
    p_agree = 0.5 if split == "test" else bias
    out = []
    for smi, _, label, _, atoms in chosen:
        d = mol_to_data(smi, atoms)
        d.y = torch.tensor([int(label)])
        if tag_shortcut:
            agree = bool(torch.rand((), generator=gt) < p_agree)
            t = int(label) if agree else 1 - int(label)
            tag = torch.zeros(d.num_nodes, 2)
            tag[:, t] = 1.0
            inside = d.node_mask
            r = torch.randint(0, 2, (int(inside.sum()),), generator=gt)
            tag[inside] = torch.nn.functional.one_hot(r, 2).float()
            d.x = torch.cat([d.x, tag], dim=1)
            d.tag = torch.tensor([t])
        out.append(d)
    return out
