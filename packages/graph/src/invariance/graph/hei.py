r"""HEI: heterophily-guided environment inference for invariant node classification.

Paper: Jinluan Yang, Zhengyu Chen, Teng Xiao, Wenqiao Zhang, Yong Lin, Kun Kuang, "Leveraging
Invariant Principle for Heterophilic Graph Structure Distribution Shifts", WWW 2025,
arXiv 2408.09490. Official code: ``github.com/Yangjinluan/HEI`` (read at dd6f210; the repository
has **no licence file**, so it is a read-only reference and nothing is copied; golden values in
``tests/hei_golden.json`` were recorded by running its formulas, see the provenance note there).

Mechanism. Under a heterophilic graph structure shift (HGSS) train and test nodes differ in their
neighbour pattern (node homophily). Labels are unknown at test time, so HEI uses a label-free
*estimate* :math:`z_v` of the neighbour pattern:
``local`` (default, the released code) :math:`z_v = \mathrm{mean}_{u \in N(v)} \|x_v - x_u\|_2`
(``"cos"``: mean raw dot product), ``agg`` the same on mean-aggregated features
:math:`\hat A X`, ``simrank`` the neighbour mean of SimRank scores (the paper's main-table choice;
not in the released code, ours). :math:`z` is standardised over the training nodes and an
environment net :math:`\rho_\phi: \mathbb{R} \to \Delta^K` (``Linear(1,16)-ReLU-Linear(16,K)-
Softmax``, Xavier init, zero bias; from ZIN) assigns soft environments. Per-node risks
:math:`\ell_v` of a backbone (PyG ``LINKX``) give environment risks
:math:`R_k(s) = \frac{1}{N} \sum_v \ell_v(s) \rho_k(\hat z_v)` with a dummy scale :math:`s=1` and
the penalty :math:`P = \sum_k (\partial R_k / \partial s)^2`.
* ``penalty="hei"`` (official, default): ``s`` multiplies the *log-probabilities*, so
  :math:`\partial R_k/\partial s = R_k(1)` and :math:`P = \sum_k R_k^2`.
* ``penalty="irmv1"`` (textbook IRMv1): ``s`` multiplies the logits.
Schedule: for the first ``anneal_steps`` steps the environment net *ascends* :math:`P` and the
backbone minimises :math:`\bar\ell + \lambda_2 \|\theta\|^2`; afterwards :math:`\phi` is frozen and
the backbone minimises :math:`(\bar\ell + \lambda_2\|\theta\|^2 + \lambda \max(P, 0))/(1+\lambda)`.

Fix of the official update order (documented deviation): the official step backpropagates the
backbone loss through the environment net *after* the environment optimiser changed it in place
(torch >= 2 raises "modified by an inplace operation"). Here :math:`P` is computed twice from the
same forward: with :math:`\ell` detached and live :math:`\rho` for the :math:`\phi`-ascent, with
:math:`\rho` detached for the :math:`\theta`-step, and both gradients come from one backward; the
values equal the official forward values.

Tested properties (``tests/test_hei.py``):
* environment assignment is node-permutation equivariant (negative control: a positional
  feature) — ``test_hei_environments_permutation_equivariant``;
* neighbour-pattern estimates are label-free — ``test_hei_estimates_label_free``;
* homophily and LocalSim against golden values recorded from the official formulas, node homophily
  mean against PyG ``homophily(method="node")`` — ``test_hei_golden_homophily_and_localsim``;
* penalty identity :math:`P_{hei} = \sum_k R_k^2` and golden penalties —
  ``test_hei_penalty_identity_and_golden``; ``"vrex"`` is zero whenever all environments have equal
  risk, ``"hei"``/``"irmv1"`` only at zero risk (P = sum_k R_k^2 > 0 for equal non-zero risks) —
  ``test_hei_penalty_zero_for_equal_risk``;
* one ascent step increases :math:`P`; :math:`\phi` frozen after annealing —
  ``test_hei_ascent_then_frozen``;
* env rows sum to one, homophily groups partition the test nodes — ``test_hei_partition``;
* mechanics of a short training run (finite loss, penalty active after annealing, above-chance
  accuracy) — ``test_hei_trains_and_penalty_active``. HEI vs ERM accuracy is a statistical claim
  (spec §2.4: gains of 1-4 points, within seed noise at our sizes) and is measured by
  ``reproduce``, not asserted in a unit test.

Deviations: the update-order fix above; SimRank/AggSim are reconstructions (paper-only);
full-batch training with model selection on validation accuracy as the official code, but fewer
epochs on CPU; the recipe's ``reproduce`` selects hyper-parameters on validation over the official
scripts' learning rates and annealing lengths only (the other official grid axes stay at one of
their values), for HEI and ERM alike (``invariance.graph.recipes.hei``). ``standardise`` maps a
constant pattern to zeros instead of dividing by a zero std.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.nn.models import LINKX
from torch_geometric.utils import remove_self_loops

from invariance.graph._checks import (
    check_edge_index,
    check_float_tensor,
    check_index_tensor,
    check_int,
    check_real,
)

__all__ = [
    "HEI",
    "EnvironmentInference",
    "local_similarity",
    "agg_similarity",
    "simrank_similarity",
    "neighbour_pattern",
    "standardise",
    "hei_penalty",
    "homophily_groups",
]

# names that moved to the recipe module (invariance.graph.recipes.hei); still importable from here
_MOVED_TO_RECIPES = (
    "train_node_model",
    "NodeResult",
    "HEIConfig",
    "HEIRecipe",
    "run_hei_reproduce",
)


def __getattr__(name: str):
    if name in _MOVED_TO_RECIPES:
        from invariance.graph.recipes import hei as _recipe

        return getattr(_recipe, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- estimators


def _check_graph(x: Tensor, edge_index: Tensor) -> None:
    check_float_tensor("x", x, ndim=2)
    check_edge_index(edge_index, x.size(0))


def _neighbour_mean(values: Tensor, src: Tensor, n: int) -> Tensor:
    """Mean of per-edge ``values`` grouped by source node; 0 for nodes without edges."""
    s = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, src, values)
    c = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(
        0, src, torch.ones_like(values)
    )
    return s / c.clamp_min(1)


def local_similarity(x: Tensor, edge_index: Tensor, method: str = "norm2") -> Tensor:
    r"""LocalSim: :math:`z_v = \mathrm{mean}_{(v,u) \in E} d(x_v, x_u)` (edges with source ``v``).

    ``method="norm2"``: :math:`\|x_v - x_u\|_2`; ``"cos"``: the raw dot product
    :math:`x_v \cdot x_u` (the official code calls it cos but does not normalise). Isolated nodes
    get 0.

    Shapes: ``x`` (N, F), ``edge_index`` (2, E) -> (N,).
    """
    _check_graph(x, edge_index)
    src, dst = edge_index
    if method == "norm2":
        d = (x[src] - x[dst]).norm(p=2, dim=-1)
    elif method == "cos":
        d = (x[src] * x[dst]).sum(-1)
    else:
        raise ValueError(f"method must be 'norm2' or 'cos', got {method!r}")
    return _neighbour_mean(d, src, x.size(0))


def agg_similarity(x: Tensor, edge_index: Tensor, method: str = "norm2") -> Tensor:
    r"""AggSim: LocalSim computed on mean-aggregated features :math:`\hat A X` (paper; ours).

    Shapes: ``x`` (N, F), ``edge_index`` (2, E) -> (N,).
    """
    _check_graph(x, edge_index)
    n = x.size(0)
    src, dst = edge_index
    agg = torch.zeros_like(x).index_add_(0, src, x[dst])
    deg = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(
        0, src, torch.ones(src.numel(), dtype=x.dtype, device=x.device)
    )
    agg = agg / deg.clamp_min(1)[:, None]
    return local_similarity(agg, edge_index, method)


def simrank_similarity(
    edge_index: Tensor,
    num_nodes: int,
    *,
    decay: float = 0.8,
    iters: int = 10,
    max_nodes: int = 5000,
) -> Tensor:
    r"""Neighbour mean of SimRank scores, :math:`z_v = \mathrm{mean}_{u\in N(v)} S(v,u)`.

    SimRank by the matrix iteration :math:`S \leftarrow c\, W^\top S W` with the diagonal reset to
    1, ``W`` the column-normalised adjacency (dense, O(N^2) memory: refused above ``max_nodes``).

    Shapes: ``edge_index`` (2, E) -> (N,).
    """
    if num_nodes > max_nodes:
        raise ValueError(f"simrank_similarity is O(N^2); num_nodes={num_nodes} > {max_nodes}")
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay must be in (0, 1), got {decay}")
    ei, _ = remove_self_loops(edge_index)
    a = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
    a[ei[0], ei[1]] = 1.0
    w = a / a.sum(0, keepdim=True).clamp_min(1)
    s = torch.eye(num_nodes, dtype=torch.float64)
    eye = torch.eye(num_nodes, dtype=torch.bool)
    for _ in range(iters):
        s = decay * (w.t() @ s @ w)
        s[eye] = 1.0
    vals = s[ei[0], ei[1]]
    return _neighbour_mean(vals, ei[0], num_nodes).float()


def neighbour_pattern(data: Data, estimator: str = "local", **kw) -> Tensor:
    """Label-free neighbour-pattern estimate ``z`` (N,) with ``estimator`` in local/agg/simrank."""
    if estimator == "local":
        return local_similarity(data.x, data.edge_index, **kw)
    if estimator == "agg":
        return agg_similarity(data.x, data.edge_index, **kw)
    if estimator == "simrank":
        return simrank_similarity(data.edge_index, data.num_nodes, **kw)
    raise ValueError(f"estimator must be 'local', 'agg' or 'simrank', got {estimator!r}")


def standardise(z: Tensor) -> Tensor:
    """``(z - mean) / std`` (unbiased std, as ``torch.std``); shape kept. Needs at least two
    entries; a constant ``z`` (std 0) standardises to zeros instead of dividing by zero."""
    check_float_tensor("z", z, ndim=1)
    if z.numel() < 2:
        raise ValueError(f"z needs at least 2 entries to standardise, got {z.numel()}")
    sd = z.std()
    return (z - z.mean()) / torch.where(sd > 0, sd, torch.ones_like(sd))


def homophily_groups(node_hom: Tensor, idx: Tensor, ratio: float = 0.5) -> tuple[Tensor, Tensor]:
    """Split node indices ``idx`` into (high, low) homophily groups at the ``ratio`` quantile.

    As ``get_idx_list`` of the official code: sort (NaN last), threshold ``t`` at position
    ``round(ratio * L)``; high = ``h >= t``, low = ``h < t``; NaN falls in neither.
    """
    h = node_hom[idx].double()
    key = torch.where(torch.isnan(h), torch.full_like(h, float("inf")), h)
    srt = torch.sort(key).values
    L = len(idx)
    t_min = srt[min(round(ratio * L), L - 1)]
    t_max = srt[min(round((1 - ratio) * L), L - 1)]
    high = idx[(h >= t_max) & ~torch.isnan(h)]
    low = idx[(h < t_min) & ~torch.isnan(h)]
    return high, low


# --------------------------------------------------------------------------- env net + penalty


class EnvironmentInference(nn.Module):
    r"""Soft environment assignment :math:`\rho_\phi(\hat z) \in \Delta^K` (ZIN's InferEnv).

    Args:
        in_channels (int): size of the neighbour-pattern input. (default: ``1``)
        hidden (int): hidden width. (default: ``16``)
        num_envs (int): number of environments ``K``. (default: ``4``)

    Shapes: (N, in_channels) -> (N, K), rows sum to 1.

    Invariance: applied row-wise, so node-permutation equivariant.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 16, num_envs: int = 4) -> None:
        super().__init__()
        check_int("in_channels", in_channels, lo=1)
        check_int("hidden", hidden, lo=1)
        check_int("num_envs", num_envs, lo=2)
        self.in_channels, self.num_envs = in_channels, num_envs
        self.lin1 = nn.Linear(in_channels, hidden)
        self.lin2 = nn.Linear(hidden, num_envs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.lin1, self.lin2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, z: Tensor) -> Tensor:
        check_float_tensor("z", z)
        if z.dim() != 2 or z.size(1) != self.in_channels:
            raise ValueError(f"z must have shape (N, {self.in_channels}), got {tuple(z.shape)}")
        return torch.softmax(self.lin2(torch.relu(self.lin1(z))), dim=1)

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, num_envs={self.num_envs}"


def hei_penalty(logits: Tensor, y: Tensor, env: Tensor, *, form: str = "hei") -> dict[str, Tensor]:
    r"""Per-environment risks and the invariance penalty.

    :math:`R_k(s) = \frac1N\sum_v \ell_v(s)\,\rho_{vk}` and :math:`P = \sum_k (\partial R_k/
    \partial s|_{s=1})^2`, computed with autograd through a dummy scale ``s`` (``create_graph``).
    ``form="hei"``: :math:`\ell_v = -s \log\mathrm{softmax}(f_v)_{y_v}` (official);
    ``form="irmv1"``: :math:`\ell_v = \mathrm{CE}(s f_v, y_v)`; ``form="vrex"`` (V-REx on the
    inferred environments, spec §2.4 comparison): :math:`P = \mathrm{Var}_k R_k`, the only form that
    vanishes whenever all environment risks are equal.

    Shapes: ``logits`` (N, C), ``y`` (N,), ``env`` (N, K) -> dict with ``nll`` (N,), ``risks``
    (K,), ``penalty`` scalar.
    """
    check_float_tensor("logits", logits, ndim=2)
    check_index_tensor("y", y, ndim=1)
    if y.shape != (logits.size(0),):
        raise ValueError(f"y must have shape ({logits.size(0)},), got {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= logits.size(1)):
        raise ValueError(
            f"y must hold classes in [0, {logits.size(1)}), got [{int(y.min())}, {int(y.max())}]"
        )
    check_float_tensor("env", env, ndim=2)
    if env.size(0) != logits.size(0):
        raise ValueError(f"env must have shape ({logits.size(0)}, K), got {tuple(env.shape)}")
    if form not in ("hei", "irmv1", "vrex"):
        raise ValueError(f"form must be 'hei', 'irmv1' or 'vrex', got {form!r}")
    create = torch.is_grad_enabled() and (logits.requires_grad or env.requires_grad)
    with torch.enable_grad():  # the penalty is a derivative, also when evaluated under no_grad
        scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
        if form == "hei":
            nll = F.nll_loss(scale * F.log_softmax(logits, dim=1), y, reduction="none")
        else:
            nll = F.cross_entropy(scale * logits, y, reduction="none")
        risks = (nll.unsqueeze(1) * env).mean(0)
        penalty = logits.new_zeros(())
        if form == "vrex":
            penalty = risks.var(unbiased=False)
        else:
            for k in range(risks.numel()):
                (g,) = torch.autograd.grad(risks[k], [scale], create_graph=True)
                penalty = penalty + g**2
    if not create:
        nll, risks, penalty = nll.detach(), risks.detach(), penalty.detach()
    return {"nll": nll, "risks": risks, "penalty": penalty}


# --------------------------------------------------------------------------- model


class HEI(nn.Module):
    r"""HEI: a node classifier (PyG ``LINKX`` backbone) with heterophily-inferred environments.

    Args:
        num_nodes (int): nodes of the (transductive) graph, needed by LINKX.
        in_channels (int): feature size.
        num_classes (int): classes.
        hidden (int): LINKX width. (default: ``64``)
        num_layers (int): LINKX final-MLP layers. (default: ``1``)
        num_edge_layers (int): LINKX adjacency-MLP layers. (default: ``2``)
        dropout (float): LINKX dropout. (default: ``0.5``)
        num_envs (int): inferred environments ``K``. (default: ``4``)
        env_hidden (int): environment-net width. (default: ``16``)
        penalty (str): ``"hei"`` (official), ``"irmv1"`` or ``"vrex"``. (default: ``"hei"``)
        penalty_weight (float): :math:`\lambda`; ``0`` gives the ERM backbone. (default: ``1e4``)
        l2_weight (float): :math:`\lambda_2` on :math:`\sum\|\theta\|^2`. (default: ``1e-3``)
        anneal_steps (int): steps of environment ascent before the penalty starts. (default: ``5``)
        estimator (str): ``"local"``, ``"agg"`` or ``"simrank"``. (default: ``"local"``)

    Shapes: ``forward(x, edge_index)`` (N, F), (2, E) -> (N, C); ``environments(z)`` (N,) -> (N, K).

    Invariance: environment assignment is node-permutation equivariant (``z`` is computed from
    neighbourhoods only). LINKX itself is transductive: its adjacency layer indexes node ids, so its
    logits are equivariant only together with the matching permutation of that layer's weights.
    """

    def __init__(
        self,
        num_nodes: int,
        in_channels: int,
        num_classes: int,
        *,
        hidden: int = 64,
        num_layers: int = 1,
        num_edge_layers: int = 2,
        dropout: float = 0.5,
        num_envs: int = 4,
        env_hidden: int = 16,
        penalty: str = "hei",
        penalty_weight: float = 1e4,
        l2_weight: float = 1e-3,
        anneal_steps: int = 5,
        estimator: str = "local",
    ) -> None:
        super().__init__()
        check_int("num_nodes", num_nodes, lo=1)
        check_int("in_channels", in_channels, lo=1)
        check_int("num_classes", num_classes, lo=2)
        check_int("hidden", hidden, lo=1)
        check_int("num_layers", num_layers, lo=1)
        check_int("num_edge_layers", num_edge_layers, lo=1)
        check_real("dropout", dropout, lo=0.0, hi=1.0, hi_open=True)
        check_int("num_envs", num_envs, lo=2)
        check_int("env_hidden", env_hidden, lo=1)
        check_real("penalty_weight", penalty_weight, lo=0.0)
        check_real("l2_weight", l2_weight, lo=0.0)
        check_int("anneal_steps", anneal_steps, lo=0)
        if penalty not in ("hei", "irmv1", "vrex"):
            raise ValueError(f"penalty must be 'hei', 'irmv1' or 'vrex', got {penalty!r}")
        if estimator not in ("local", "agg", "simrank"):
            raise ValueError(f"estimator must be 'local', 'agg' or 'simrank', got {estimator!r}")
        self.num_nodes, self.num_classes = num_nodes, num_classes
        self.penalty, self.penalty_weight, self.l2_weight = penalty, penalty_weight, l2_weight
        self.anneal_steps, self.estimator = anneal_steps, estimator
        self.backbone = LINKX(
            num_nodes,
            in_channels,
            hidden,
            num_classes,
            num_layers,
            num_edge_layers=num_edge_layers,
            dropout=dropout,
        )
        self.env_net = EnvironmentInference(1, env_hidden, num_envs)
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    def reset_parameters(self) -> None:
        self.backbone.reset_parameters()
        self.env_net.reset_parameters()
        self.num_steps.zero_()

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        _check_graph(x, edge_index)
        if x.size(0) != self.num_nodes:
            raise ValueError(f"HEI was built for {self.num_nodes} nodes, got x with {x.size(0)}")
        return self.backbone(x, edge_index)

    def environments(self, z: Tensor) -> Tensor:
        """Soft environments (N, K) of nodes with raw pattern ``z`` (N,), standardised here."""
        if z.dim() != 1:
            raise ValueError(f"z must have shape (N,), got {tuple(z.shape)}")
        return self.env_net(standardise(z).unsqueeze(1))

    def loss(self, data: Data, z: Tensor | None = None) -> dict[str, Tensor]:
        """One full-batch HEI step's loss on ``data.train_mask`` (both players, one backward)."""
        for k in ("x", "edge_index", "y", "train_mask"):
            if getattr(data, k, None) is None:
                raise TypeError(f"data needs '{k}'")
        if z is None:
            z = getattr(data, "hei_z", None)
        _check_graph(data.x, data.edge_index)
        n = data.x.size(0)
        tr = data.train_mask
        if not isinstance(tr, Tensor) or tr.dtype != torch.bool or tr.shape != (n,):
            raise ValueError(
                f"train_mask must be a bool tensor of shape ({n},), got "
                f"{getattr(tr, 'dtype', type(tr).__name__)} "
                f"{tuple(getattr(tr, 'shape', ()))}"
            )
        if int(tr.sum()) < 2:
            raise ValueError(
                f"train_mask selects {int(tr.sum())} node(s); HEI standardises the "
                f"neighbour pattern over the training nodes and needs at least 2"
            )
        y_all = data.y
        check_index_tensor("y", y_all, ndim=y_all.dim() if y_all.dim() in (1, 2) else 1)
        if y_all.numel() != n or (y_all.dim() == 2 and y_all.size(1) != 1):
            raise ValueError(f"y must have shape ({n},) or ({n}, 1), got {tuple(y_all.shape)}")
        if z is None:
            z = neighbour_pattern(data, self.estimator)
        check_float_tensor("z", z, ndim=1)
        if z.numel() != n:
            raise ValueError(f"z must have shape ({n},), got {tuple(z.shape)}")
        logits = self(data.x, data.edge_index)[tr]
        y = data.y.reshape(-1)[tr]
        env = self.environments(z[tr].to(logits.dtype))
        step = int(self.num_steps)
        theta = hei_penalty(logits, y, env.detach(), form=self.penalty)
        nll = theta["nll"].mean()
        l2 = sum(p.pow(2).sum() for p in self.backbone.parameters())
        w = self.penalty_weight if step >= self.anneal_steps else 0.0
        loss = nll + self.l2_weight * l2 + w * theta["penalty"].clamp_min(0.0)
        if w > 1.0:
            loss = loss / (1.0 + w)
        out = {
            "nll": nll.detach(),
            "penalty": theta["penalty"].detach(),
            "acc": (logits.argmax(-1) == y).float().mean(),
        }
        if step < self.anneal_steps:  # environment net ascends P (backbone detached)
            phi = hei_penalty(logits.detach(), y, env, form=self.penalty)
            loss = loss - phi["penalty"]
        out["loss"] = loss
        if self.training:
            self.num_steps += 1
        return out

    def extra_repr(self) -> str:
        return (
            f"penalty={self.penalty}, penalty_weight={self.penalty_weight}, "
            f"anneal_steps={self.anneal_steps}, estimator={self.estimator}"
        )
