"""GREA's alternating training schedule and graph evaluation, shared by the ``igt``, ``igt_vn``
and ``grea`` recipes (:mod:`invariance.graph.recipes.igt`) and the graph benches, and the
markdown table of the reproduce grid."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from invariance.core.train import build_optimizer
from invariance.graph.grea import GREA, GINClassifier
from invariance.graph.igt import IGT
from invariance.graph.nn.rationale import rationale_auc

# ------------------------------------------------------ training / eval (GREA's schedule)


@torch.no_grad()
def evaluate_graphs(
    model: nn.Module, graphs: list[Data], *, batch_size: int = 256
) -> dict[str, float]:
    """Accuracy and (for rationale models) node-level rationale ROC-AUC on ``graphs``."""
    was = model.training
    model.eval()
    correct, total, scores, truth = 0, 0, [], []
    for i in range(0, len(graphs), batch_size):
        b = Batch.from_data_list(graphs[i : i + batch_size])
        pred = model(b).argmax(-1)
        correct += int((pred == b.y.reshape(-1)).sum())
        total += b.num_graphs
        if hasattr(model, "node_scores") and getattr(b, "node_mask", None) is not None:
            scores.append(model.node_scores(b))
            truth.append(b.node_mask)
    model.train(was)
    out = {"acc": correct / max(total, 1)}
    if scores:
        out["rationale_auc"] = rationale_auc(torch.cat(scores), torch.cat(truth))
    return out


def alternate_phase(epoch: int, path: tuple[int, int] = (1, 4)) -> str:
    """GREA's ``path_list`` rule: epoch ``e`` trains the separator if ``e % path[1] < path[0]``,
    else the encoder + predictor (``(1, 4)``: one separator epoch, then three predictor epochs)."""
    return "separator" if epoch % path[1] < path[0] else "predictor"


def graph_train_step(
    model: nn.Module,
    batch,
    opts,
    *,
    active: str,
    step: int,
    clip: float = 5.0,
    adv_every: int = 3,
    generator=None,
) -> dict[str, Tensor]:
    """One optimiser step of :func:`train_graph_model` (and of the recipes' ``train_step``).

    ``opts`` maps group names (``model.param_groups()``: ``separator``, ``predictor``, IGT's
    ``intervener``; or ``all``) to optimisers; ``active`` is the group that steps
    (:func:`alternate_phase`); the intervener steps after every ``adv_every``-th step (``step``
    counts the steps already taken). Freezing the idle player is the caller's job.
    """
    out = model.loss(batch, generator=generator)
    for o in opts.values():
        o.zero_grad(set_to_none=True)
    out["loss"].backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opts[active].step()
    if "intervener" in opts and (step + 1) % adv_every == 0:
        opts["intervener"].step()
    return {k: v.detach() for k, v in out.items() if isinstance(v, Tensor) and v.numel() == 1}


def _freeze_idle(groups: dict, active: str) -> None:
    for k, ps in groups.items():
        for p in ps:
            p.requires_grad_(k in (active, "intervener"))


def train_graph_model(
    model: nn.Module,
    graphs: list[Data],
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    clip: float = 5.0,
    schedule: str = "joint",
    path: tuple[int, int] = (1, 4),
    adv_every: int = 3,
    weight_decay: float = 0.0,
    adv_lr: float | None = None,
    optimizer: str = "adam",
) -> list[float]:
    """Epoch loop (Adam, shuffled mini-batches) driving ``model.loss``; returns epoch losses.

    ``schedule="joint"``: one optimiser over all parameters (the intervener's gradient is reversed
    by its hooks). ``schedule="alternate"`` (GREA's official schedule, ``main_pyg.py``/``utils.py``
    of ``liugangcode/GREA``): two Adam optimisers, ``separator`` (augmenter + gate) and
    ``predictor`` (encoder + predictor); by :func:`alternate_phase` an epoch updates one of them
    with the other frozen. For IGT a third optimiser updates the intervener (the adversary) every
    ``adv_every``-th step, so it moves slower than the players it attacks. Models without
    ``param_groups`` (ERM) always train jointly. ``adv_lr`` (alternating schedule only; default
    ``lr``) is the intervener's learning rate: Adam divides out a constant gradient scale, so IGT's
    ``adv_scale`` sets the direction of the adversary's step but not its size; a smaller
    ``adv_lr`` is what makes the adversary slower. ``optimizer`` names the optimiser of every
    group (:func:`invariance.optim.create_optimizer`; GREA's official code uses Adam).
    """
    if schedule not in ("joint", "alternate"):
        raise ValueError(f"schedule must be 'joint' or 'alternate', got {schedule!r}")
    g = torch.Generator().manual_seed(seed)
    groups = (
        model.param_groups()
        if schedule == "alternate" and hasattr(model, "param_groups")
        else {"all": list(model.parameters())}
    )
    if adv_lr is not None and schedule != "alternate":
        raise ValueError("adv_lr needs schedule='alternate' (its own optimiser for the intervener)")
    opts = {
        k: build_optimizer(
            v,
            optimizer,
            weight_decay=weight_decay,
            lr=adv_lr if k == "intervener" and adv_lr is not None else lr,
        )
        for k, v in groups.items()
    }
    model.train()
    hist, step = [], 0
    for epoch in range(epochs):
        active = alternate_phase(epoch, path) if "separator" in groups else "all"
        if "separator" in groups:  # freeze the other player, as the official code does
            _freeze_idle(groups, active)
        perm = torch.randperm(len(graphs), generator=g).tolist()
        tot, nb = 0.0, 0
        for i in range(0, len(graphs) - 1, batch_size):
            idx = perm[i : i + batch_size]
            if len(idx) < 2:
                continue
            out = graph_train_step(
                model,
                Batch.from_data_list([graphs[j] for j in idx]),
                opts,
                active=active,
                step=step,
                clip=clip,
                adv_every=adv_every,
                generator=g,
            )
            step += 1
            tot += float(out["loss"])
            nb += 1
        hist.append(tot / max(nb, 1))
    for p in model.parameters():
        p.requires_grad_(True)
    return hist


def build_graph_model(
    kind: str, in_channels: int, num_classes: int, *, edge_dim=None, **kw
) -> nn.Module:
    """``kind`` in {"igt", "igt_vn", "igt_coop", "grea", "erm"} -> model."""
    if kind in ("igt", "igt_n"):
        return IGT(in_channels, num_classes, variant="node", edge_dim=edge_dim, **kw)
    if kind == "igt_coop":
        return IGT(
            in_channels, num_classes, variant="node", edge_dim=edge_dim, adversarial=False, **kw
        )
    if kind == "igt_vn":
        return IGT(in_channels, num_classes, variant="virtual", edge_dim=edge_dim, **kw)
    kw = {
        k: v
        for k, v in kw.items()
        if k
        in (
            "hidden",
            "num_layers",
            "sep_layers",
            "dropout",
            "gamma",
            "beta",
            "virtual_node",
            "mask",
            "reencode",
        )
    }
    if kind == "grea":
        return GREA(in_channels, num_classes, edge_dim=edge_dim, **kw)
    if kind == "erm":
        kw = {
            k: v for k, v in kw.items() if k in ("hidden", "num_layers", "dropout", "virtual_node")
        }
        return GINClassifier(in_channels, num_classes, edge_dim=edge_dim, **kw)
    raise ValueError(f"unknown model kind {kind!r}; expected igt, igt_vn, igt_coop, grea or erm")


# --------------------------------------------------------------------------- recipe


#: display names of the grid's model kinds
_GRID_NAMES = {
    "igt": "IGT-N (adversarial)",
    "igt_coop": "IGT-N (cooperative)",
    "igt_vn": "IGT-VN",
    "grea": "GREA",
    "erm": "ERM-GIN",
}


def grid_markdown(rows: dict, seeds: int) -> str:
    """The reproduce grid as a markdown table: OOD acc and rationale AUC, mean ± sd over seeds."""

    def f(v):
        return "–" if v[0] != v[0] else f"{v[0]:.2f} ± {v[1]:.2f}"

    settings = list(dict.fromkeys(k.rsplit("/", 1)[0] for k in rows))
    kinds = list(dict.fromkeys(k.rsplit("/", 1)[1] for k in rows))
    head = "| data | " + " | ".join(_GRID_NAMES.get(k, k) for k in kinds) + " |"
    out = [
        f"OOD accuracy / rationale AUC, mean ± sd over {seeds} seed(s)",
        "",
        head,
        "|---" * (len(kinds) + 1) + "|",
    ]
    for st in settings:
        cells = [
            f"{f(rows[f'{st}/{k}']['ood_acc'])} / {f(rows[f'{st}/{k}']['rationale_auc'])}"
            for k in kinds
        ]
        out.append(f"| {st} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"
