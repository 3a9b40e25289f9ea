"""LisGAN's recognition side (used by :mod:`invariance.vision.recipes.lisgan` and the
benches): the linear softmax classifier trained on (generated) features, the second stage of the
two-stage cascade (:func:`cascade_predict`) and the ESZSL closed-form baseline (:func:`eszsl`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from invariance.vision._checks import check_int, check_tensor
from invariance.vision.lisgan import select_confident

__all__ = ["cascade_predict", "eszsl"]


def _train_softmax(
    x: Tensor,
    y: Tensor,
    n_cls: int,
    *,
    epochs: int,
    batch: int,
    seed: int,
    lin: nn.Linear | None = None,
) -> nn.Linear:
    """A linear log-softmax classifier, Adam (lr 1e-3, beta1 0.5) as the official
    classifiers; continues training ``lin`` when given."""
    g = torch.Generator().manual_seed(seed)
    if lin is None:
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        lin = nn.Linear(x.shape[1], n_cls)
        torch.random.set_rng_state(state)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-3, betas=(0.5, 0.999))
    with torch.enable_grad():
        for _ in range(epochs):
            perm = torch.randperm(len(y), generator=g)
            for i in range(0, len(y), batch):
                j = perm[i : i + batch]
                loss = nn.functional.cross_entropy(lin(x[j]), y[j])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return lin


def cascade_predict(
    lin: nn.Linear,
    syn: Tensor,
    syn_idx: Tensor,
    test_x: Tensor,
    *,
    ratio: float,
    confidence: str = "entropy",
    epochs: int,
    batch: int,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Second stage of LisGAN's two-stage recognition: ``lin`` (stage 1, trained on generated
    features ``syn`` with class indices ``syn_idx``) labels ``test_x``; the ``ratio`` share
    picked by :func:`select_confident` keeps its label and joins the training set, a copy of
    ``lin`` keeps training on ``syn`` + those samples for ``epochs`` and re-labels the rest.
    Returns ``(pred, easy)``: the final class index of every test sample and the easy indices."""
    if not isinstance(lin, nn.Linear):
        raise TypeError(f"lin must be an nn.Linear, got {type(lin).__name__}")
    check_tensor(syn, "syn", dims=2, expected="(N, D) generated features")
    check_tensor(syn_idx, "syn_idx", dims=1, floating=False, expected="(N,) class indices")
    check_tensor(test_x, "test_x", dims=2, expected="(M, D) test features")
    if syn.shape[1] != lin.in_features or test_x.shape[1] != lin.in_features:
        raise ValueError(f"syn and test_x must have {lin.in_features} features")
    if syn_idx.shape[0] != syn.shape[0] or syn_idx.dtype != torch.int64:
        raise ValueError(f"syn_idx must be ({syn.shape[0]},) int64 class indices")
    if syn_idx.numel() and (int(syn_idx.min()) < 0 or int(syn_idx.max()) >= lin.out_features):
        raise ValueError(f"syn_idx must be in [0, {lin.out_features})")
    check_int(epochs, "epochs")
    check_int(batch, "batch")
    check_int(seed, "seed", lo=0)
    with torch.no_grad():
        lp = torch.log_softmax(lin(test_x), 1)
    pred1 = lp.argmax(1)
    easy, hard = select_confident(lp, ratio, confidence=confidence)
    lin2 = nn.Linear(lin.in_features, lin.out_features)
    lin2.load_state_dict(lin.state_dict())
    x2 = torch.cat([syn, test_x[easy]])
    y2 = torch.cat([syn_idx, pred1[easy]])
    lin2 = _train_softmax(x2, y2, lin.out_features, epochs=epochs, batch=batch, seed=seed, lin=lin2)
    pred = pred1.clone()
    with torch.no_grad():
        pred[hard] = lin2(test_x[hard]).argmax(1)
    return pred, easy


def eszsl(
    x: Tensor, y_idx: Tensor, s_seen: Tensor, *, gamma: float = 1.0, lam: float = 1.0
) -> Tensor:
    """ESZSL (Romera-Paredes and Torr 2015), the closed-form attribute embedding baseline:
    ``V = (X^T X + gamma I)^-1 X^T Y S (S^T S + lam I)^-1`` with ``Y`` in {-1, 1}; score of class
    ``c`` for feature ``x``: ``x V s_c``. Returns ``V`` (feat_dim, n_attributes)."""
    xd, s = x.double(), s_seen.double().T  # S: (A, Z)
    yy = -torch.ones(len(y_idx), s.shape[1], dtype=torch.float64)
    yy[torch.arange(len(y_idx)), y_idx] = 1.0
    a = xd.T @ xd + gamma * torch.eye(xd.shape[1], dtype=torch.float64)
    b = s @ s.T + lam * torch.eye(s.shape[0], dtype=torch.float64)
    return (torch.linalg.solve(a, xd.T @ yy @ s.T) @ torch.linalg.inv(b)).float()
