r"""MEDL / scMEDAL: mixed-effects deep learning for single-cell RNA-seq with batch effects.

Paper: Aixa X. Andrade, Son Nguyen, Albert Montillo, *Mixed Effects Deep Learning for the
interpretable analysis of single cell RNA sequencing data by quantifying and visualizing batch
effects* (arXiv:2411.06635). Official code (TF/Keras + tensorflow-probability; no licence file
found): https://github.com/DeepLearningForPrecisionHealthLab/scMEDAL_for_scRNAseq
(``scMEDAL/models/scMEDAL.py``, per-dataset ``model_config.py``), building on ARMED
(Nguyen et al., TPAMI 2023). Re-implemented in torch from reading that code; nothing copied.

Mechanism. Cells ``x`` (genes, min-max scaled) come with a one-hot batch design ``Z``.

* **Fixed effects (FE, "AE_DA")**: encoder Dense(512) -> BN -> SELU -> Dense(132) -> BN -> SELU ->
  Dense(latent, SELU); a *tied* decoder (transposed encoder kernels, own zero biases, SELU, linear
  output); an adversary MLP (hidden = encoder widths, ReLU) predicts the batch from the
  concatenated activations of *all* encoder layers. The adversary minimises
  :math:`\mathrm{CE}(Z)`; the autoencoder minimises :math:`\lambda_{rec}\mathrm{MSE} -
  \lambda_{gen}\mathrm{CE}_{adv} + \lambda_{cls}\mathrm{CE}(y|z_{FE})`.
  So :math:`z_{FE}` is batch-invariant.
* **Random effects (RE, "AE_RE")**: encoder blocks Dense -> RE block -> SELU, then
  Dense(latent, SELU);
  decoder (not tied) blocks Dense -> RE block -> SELU, last block linear. The RE block is
  :math:`\mathrm{BN}(h)\odot(1 + Z W_\gamma) + Z W_\beta` with variational weights
  :math:`W \sim \mathcal N(\mu, (10^{-5}+\operatorname{softplus}\rho)^2)`, prior
  :math:`\mathcal N(0, 0.25^2)`, means initialised :math:`\mathcal N(0, 0.1^2)`, scales in
  ``[0.01, 0.015]``; one weight sample per training forward pass, posterior mean in eval. A small
  latent classifier (hidden [5]) *predicts* the batch from :math:`z_{RE}` (domain-enhancing). Loss:
  :math:`110\,\mathrm{MSE} + 0.1\,\mathrm{CE}(Z|z_{RE}) + \overline{KL}_{enc} + \overline{KL}_{dec}`
  (KL weight :math:`10^{-5}`, mean over RE layers).
* **Mixed-effects classifier (MEC)**: a classifier on :math:`[z_{FE} \oplus z_{RE}]`.
* **Counterfactuals**: re-decode a cell with another batch one-hot (:meth:`MEDL.counterfactual`).

Tested properties (``tests/test_medl.py``):
* with zero posterior means and scales the RE block is exactly invariant to the batch one-hot
  (``invariance.core.testing``); with its trained posterior it is not (negative control)
  (``test_medl_re_block_invariant_when_posterior_zero``);
* permuting batch columns together with the rows of :math:`W_\gamma, W_\beta` leaves outputs
  identical (``test_medl_batch_relabel_equivariance``);
* the closed-form KL matches a Monte-Carlo estimate (``test_medl_kl_closed_form``);
* after training on simulated data a probe on :math:`z_{FE}` predicts the batch worse than on a
  plain AE's latent, and a probe on :math:`z_{RE}` predicts it well
  (``test_medl_fe_removes_batch``, joint schedule: at this 150-step size the alternating
  schedule's FE batch probe was 0.94 / 0.93 / 0.84 on seeds 0 / 1 / 2 against 0.98 / 1.00 / 1.00
  for the AE, too close to assert);
* the alternating schedule gives the adversary no gradient from the autoencoder phase and moves
  both parts (``test_medl_alternating_schedule_separates_optimisers``);
* shapes and bad-input errors (``test_medl_bad_inputs``).

Schedule: :func:`fit_medl` (and ``reproduce``) use the official alternating step by default
(``schedule="alternating"``, as in ``DomainAdversarialAE.train_step``): the adversary takes a step
of its own Adam on the encoder activations, then a fresh forward pass and a step of a second Adam
on the autoencoder losses against the *updated* adversary. ``schedule="joint"`` is the single-step
variant (both in one optimiser step, the autoencoder sees the pre-update adversary).
``invariance-causal train medl`` follows the config's ``schedule`` (default ``"alternating"``):
the recipe's ``train_step`` runs :func:`medl_alternating_step` with two optimisers (a
``NamedOptimizers`` of ``main`` and ``adversary``, checkpointed and resumed together);
``test_medl_alternating_schedule_separates_optimisers`` checks the split and
``test_medl_train_uses_alternating_schedule`` that ``train`` takes the same step.

Deviations: (1) FE, RE and MEC are trained together in one
module (their parameters are disjoint; the MEC sees detached latents), instead of three separate
runs.
(2) Tiny presets use narrower layers, a larger learning rate and ``lambda_rec = 1`` instead of
the AML config (512/132, Adam 1e-4, ``lambda_rec = 4000``, 500 epochs): at a few hundred steps
``lambda_rec = 4000`` left the adversary without measurable effect. The paper widths are the
defaults of :class:`MEDL`; the loss defaults of :func:`medl_loss` are the AML config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.core.recipe import Recipe, ReproduceResult, TrainConfig
from invariance.core.registry import register

__all__ = [
    "MEDL",
    "MEDLConfig",
    "MEDLRecipe",
    "RandomEffectBlock",
    "batch_silhouette",
    "fit_medl",
    "medl_alternating_step",
    "medl_loss",
    "probe_accuracy",
]


def _mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """ReLU MLP ``in -> hidden... -> out`` (logits)."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class RandomEffectBlock(nn.Module):
    r"""Cluster (batch) scale-and-bias random effects after batch norm.

    .. math:: \mathrm{RE}(h, Z) = \mathrm{BN}(h) \odot (1 + Z W_\gamma) + Z W_\beta

    with mean-field Gaussian posteriors on :math:`W_\gamma, W_\beta \in \mathbb R^{B\times F}`.

    Args:
        features (int): width ``F``.
        n_batches (int): number of batches ``B``.
        post_loc_init_scale (float): std of the posterior-mean init (default: 0.1).
        prior_scale (float): prior std (default: 0.25).
        kl_weight (float): multiplier of the KL term (default: 1e-5).

    Shapes: ``h (N, F)``, ``z (N, B)`` one-hot -> ``(N, F)``.

    **Invariance**: equivariant to relabelling batches (permuting ``z``'s columns with the rows of
    the weights); invariant to ``z`` when the posterior is zero.
    """

    def __init__(
        self,
        *,
        features: int,
        n_batches: int,
        post_loc_init_scale: float = 0.1,
        prior_scale: float = 0.25,
        kl_weight: float = 1e-5,
    ) -> None:
        super().__init__()
        self.features, self.n_batches = features, n_batches
        self.post_loc_init_scale, self.prior_scale, self.kl_weight = (
            post_loc_init_scale,
            prior_scale,
            kl_weight,
        )
        self.bn = nn.BatchNorm1d(features, affine=False)
        self.gamma_loc = nn.Parameter(torch.empty(n_batches, features))
        self.gamma_rho = nn.Parameter(torch.empty(n_batches, features))
        self.beta_loc = nn.Parameter(torch.empty(n_batches, features))
        self.beta_rho = nn.Parameter(torch.empty(n_batches, features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        lo, hi = (math.log(math.expm1(s - 1e-5)) for s in (0.01, 0.015))
        with torch.no_grad():
            for loc, rho in ((self.gamma_loc, self.gamma_rho), (self.beta_loc, self.beta_rho)):
                loc.normal_(0.0, self.post_loc_init_scale)
                rho.uniform_(lo, hi)
        self.bn.reset_parameters()

    def scales(self) -> tuple[Tensor, Tensor]:
        """Posterior stds of ``W_gamma`` and ``W_beta``: ``1e-5 + softplus(rho)``."""
        return 1e-5 + F.softplus(self.gamma_rho), 1e-5 + F.softplus(self.beta_rho)

    def weights(self) -> tuple[Tensor, Tensor]:
        """One posterior sample in training mode, the posterior means in eval mode."""
        if not self.training:
            return self.gamma_loc, self.beta_loc
        sg, sb = self.scales()
        return (
            self.gamma_loc + sg * torch.randn_like(sg),
            self.beta_loc + sb * torch.randn_like(sb),
        )

    def kl(self) -> Tensor:
        """``kl_weight * KL(q || p)`` summed over both weight matrices (closed form)."""
        sg, sb = self.scales()
        total = 0.0
        for loc, s in ((self.gamma_loc, sg), (self.beta_loc, sb)):
            p = self.prior_scale
            total = total + (torch.log(p / s) + (s**2 + loc**2) / (2 * p**2) - 0.5).sum()
        return self.kl_weight * total

    def forward(self, h: Tensor, z: Tensor) -> Tensor:
        wg, wb = self.weights()
        return self.bn(h) * (1 + z @ wg) + z @ wb

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, n_batches={self.n_batches}, prior_scale={self.prior_scale}"
        )


class _FixedEffectsAE(nn.Module):
    """scMEDAL-FE: BN encoder, tied decoder, adversary on all encoder activations."""

    def __init__(
        self,
        n_genes: int,
        hidden: tuple[int, ...],
        latent: int,
        n_batches: int,
        n_classes: int,
        cls_hidden: tuple[int, ...],
    ) -> None:
        super().__init__()
        dims = [n_genes, *hidden]
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.bns = nn.ModuleList(nn.BatchNorm1d(b) for b in hidden)
        self.latent = nn.Linear(dims[-1], latent)
        # tied decoder: own biases only (zero init), kernels are the encoder's transposed
        self.dec_bias = nn.ParameterList(nn.Parameter(torch.zeros(d)) for d in reversed(dims))
        self.adversary = _mlp(sum(hidden) + latent, tuple(hidden), n_batches)
        self.classifier = _mlp(latent, cls_hidden, n_classes) if n_classes > 0 else None

    def encode(self, x: Tensor) -> list[Tensor]:
        acts = []
        h = x
        for lin, bn in zip(self.dense, self.bns):
            h = F.selu(bn(lin(h)))
            acts.append(h)
        acts.append(F.selu(self.latent(h)))
        return acts

    def decode(self, z: Tensor) -> Tensor:
        kernels = [self.latent.weight] + [lin.weight for lin in reversed(self.dense)]
        h = z
        for i, (w, b) in enumerate(zip(kernels, self.dec_bias)):
            h = h @ w + b
            if i < len(kernels) - 1:
                h = F.selu(h)
        return h


class _RandomEffectsAE(nn.Module):
    """scMEDAL-RE: Dense -> RE -> SELU blocks, untied decoder, a batch classifier on the latent."""

    def __init__(
        self,
        n_genes: int,
        hidden: tuple[int, ...],
        latent: int,
        n_batches: int,
        re_kw: dict,
        cls_hidden: tuple[int, ...],
    ) -> None:
        super().__init__()
        dims = [n_genes, *hidden]
        self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.enc_re = nn.ModuleList(
            RandomEffectBlock(features=b, n_batches=n_batches, **re_kw) for b in hidden
        )
        self.latent = nn.Linear(dims[-1], latent)
        ddims = [latent, *reversed(hidden), n_genes]
        self.dec = nn.ModuleList(nn.Linear(a, b) for a, b in zip(ddims[:-1], ddims[1:]))
        self.dec_re = nn.ModuleList(
            RandomEffectBlock(features=b, n_batches=n_batches, **re_kw) for b in ddims[1:]
        )
        self.batch_classifier = _mlp(latent, cls_hidden, n_batches)

    def encode(self, x: Tensor, z: Tensor) -> Tensor:
        h = x
        for lin, re in zip(self.enc, self.enc_re):
            h = F.selu(re(lin(h), z))
        return F.selu(self.latent(h))

    def decode(self, u: Tensor, z: Tensor) -> Tensor:
        h = u
        for i, (lin, re) in enumerate(zip(self.dec, self.dec_re)):
            h = re(lin(h), z)
            if i < len(self.dec) - 1:
                h = F.selu(h)
        return h

    def kl(self) -> Tensor:
        enc = torch.stack([b.kl() for b in self.enc_re]).mean()
        dec = torch.stack([b.kl() for b in self.dec_re]).mean()
        return enc + dec


class MEDL(nn.Module):
    r"""Mixed-effects autoencoder: batch-invariant (FE) and batch-specific (RE) latents + MEC.

    Args:
        n_genes (int): input width.
        n_batches (int): number of batches (one-hot width).
        n_classes (int): classes of the cell label for the FE latent classifier and the MEC
            (0 disables both) (default: 0).
        hidden (tuple[int, ...]): encoder widths (default: ``(512, 132)``, the official configs).
        latent (int): latent size of each of FE and RE (default: 2).
        fe_cls_hidden (tuple[int, ...]): FE latent classifier hidden widths (default: ``(2,)``).
        re_cls_hidden (tuple[int, ...]): RE batch classifier hidden widths (default: ``(5,)``).
        mec_hidden (tuple[int, ...]): MEC hidden widths (default: ``(16,)``).
        post_loc_init_scale, prior_scale, kl_weight (float): RE posterior/prior settings
            (defaults: 0.1, 0.25, 1e-5).

    Shapes: ``x (N, n_genes)``, ``batch (N,)`` long or ``(N, n_batches)`` one-hot. ``forward``
    returns a dict with ``recon_fe``, ``recon_re`` ``(N, n_genes)``, ``z_fe``, ``z_re``
    ``(N, latent)``, ``adv_logits``, ``re_batch_logits`` ``(N, n_batches)`` and, when
    ``n_classes > 0``, ``fe_class_logits``, ``mec_logits`` ``(N, n_classes)``, plus the encoder
    activations ``fe_acts``.

    **Invariance**: ``z_fe`` does not read the batch; the adversary trains it to carry no batch
    information. The RE path is equivariant to relabelling batches.
    """

    def __init__(
        self,
        *,
        n_genes: int,
        n_batches: int,
        n_classes: int = 0,
        hidden: tuple[int, ...] = (512, 132),
        latent: int = 2,
        fe_cls_hidden: tuple[int, ...] = (2,),
        re_cls_hidden: tuple[int, ...] = (5,),
        mec_hidden: tuple[int, ...] = (16,),
        post_loc_init_scale: float = 0.1,
        prior_scale: float = 0.25,
        kl_weight: float = 1e-5,
    ) -> None:
        super().__init__()
        for name, v, lo in (
            ("n_genes", n_genes, 1),
            ("n_batches", n_batches, 2),
            ("n_classes", n_classes, 0),
            ("latent", latent, 1),
        ):
            if not isinstance(v, int) or v < lo:
                raise ValueError(f"MEDL: {name} must be an int >= {lo}, got {v!r}")
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(
                f"MEDL: hidden must be a non-empty tuple of positive ints, got {hidden}"
            )
        self.n_genes, self.n_batches, self.n_classes = n_genes, n_batches, n_classes
        self.hidden, self.latent_dim = hidden, latent
        re_kw = dict(
            post_loc_init_scale=post_loc_init_scale, prior_scale=prior_scale, kl_weight=kl_weight
        )
        self.fe = _FixedEffectsAE(
            n_genes, hidden, latent, n_batches, n_classes, tuple(fe_cls_hidden)
        )
        self.re = _RandomEffectsAE(n_genes, hidden, latent, n_batches, re_kw, tuple(re_cls_hidden))
        self.mec = _mlp(2 * latent, tuple(mec_hidden), n_classes) if n_classes > 0 else None

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        for b in self.fe.dec_bias:
            nn.init.zeros_(b)

    def _onehot(self, batch: Tensor, n: int) -> Tensor:
        if batch.dim() == 1:
            if batch.dtype.is_floating_point:
                raise TypeError(f"MEDL: integer batch labels expected, got dtype {batch.dtype}")
            if batch.numel() and (int(batch.min()) < 0 or int(batch.max()) >= self.n_batches):
                raise ValueError(
                    f"MEDL: batch labels must lie in [0, {self.n_batches}), got range "
                    f"[{int(batch.min())}, {int(batch.max())}]"
                )
            z = F.one_hot(batch.long(), self.n_batches)
        elif batch.dim() == 2 and batch.shape[1] == self.n_batches:
            z = batch
        else:
            raise ValueError(
                f"MEDL: batch must be (N,) labels or (N, {self.n_batches}) one-hot, got "
                f"{tuple(batch.shape)}"
            )
        if z.shape[0] != n:
            raise ValueError(f"MEDL: batch has {z.shape[0]} rows but x has {n}")
        return z

    def _check_x(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"MEDL: x must be a Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.n_genes:
            raise ValueError(f"MEDL: x must have shape (N, {self.n_genes}), got {tuple(x.shape)}")

    def forward(self, x: Tensor, batch: Tensor) -> dict[str, Tensor]:
        self._check_x(x)
        z = self._onehot(batch, x.shape[0]).to(x.dtype)
        acts = self.fe.encode(x)
        z_fe = acts[-1]
        z_re = self.re.encode(x, z)
        out = {
            "z_fe": z_fe,
            "z_re": z_re,
            "recon_fe": self.fe.decode(z_fe),
            "recon_re": self.re.decode(z_re, z),
            "fe_acts": torch.cat(acts, dim=1),
            "adv_logits": self.fe.adversary(torch.cat(acts, dim=1)),
            "re_batch_logits": self.re.batch_classifier(z_re),
        }
        if self.n_classes > 0:
            out["fe_class_logits"] = self.fe.classifier(z_fe)
            out["mec_logits"] = self.mec(torch.cat([z_fe, z_re], 1).detach())
        return out

    @torch.no_grad()
    def embed(self, x: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
        """``(z_fe, z_re)`` in eval mode (posterior means)."""
        was = self.training
        self.eval()
        out = self.forward(x, batch)
        self.train(was)
        return out["z_fe"], out["z_re"]

    @torch.no_grad()
    def counterfactual(self, x: Tensor, batch: Tensor, target_batch: int) -> Tensor:
        """Re-decode every cell as if it came from ``target_batch`` (RE decoder, eval mode)."""
        if not 0 <= int(target_batch) < self.n_batches:
            raise ValueError(f"target_batch must be in [0, {self.n_batches}), got {target_batch}")
        was = self.training
        self.eval()
        z = self._onehot(batch, x.shape[0]).to(x.dtype)
        u = self.re.encode(x, z)
        zt = torch.zeros_like(z)
        zt[:, int(target_batch)] = 1
        out = self.re.decode(u, zt)
        self.train(was)
        return out

    def extra_repr(self) -> str:
        return (
            f"n_genes={self.n_genes}, n_batches={self.n_batches}, n_classes={self.n_classes}, "
            f"hidden={self.hidden}, latent={self.latent_dim}"
        )


def medl_loss(
    model: MEDL,
    x: Tensor,
    batch: Tensor,
    labels: Tensor | None = None,
    *,
    lambda_rec: float = 4000.0,
    lambda_gen: float = 1.0,
    lambda_cls: float = 1.0,
    re_rec: float = 110.0,
    re_batch: float = 0.1,
    adversarial: bool = True,
    train_adversary: bool = True,
) -> dict[str, Tensor]:
    r"""All MEDL losses for one minibatch (defaults: the official AML config).

    ``loss`` = adversary CE (on detached activations; trains only the adversary)
    + :math:`\lambda_{rec}` FE-MSE :math:`-\lambda_{gen}` CE of the frozen adversary
    (+ :math:`\lambda_{cls}` FE label CE) + ``re_rec`` RE-MSE + ``re_batch`` RE batch CE + RE KL
    (+ MEC CE on detached latents). ``adversarial=False`` drops the generator term (the plain
    autoencoder baseline; the adversary is still trained, as a probe). ``train_adversary=False``
    leaves the adversary CE out of ``loss`` (still reported as ``adv_ce``): the autoencoder phase
    of the official alternating schedule (:func:`fit_medl`, ``schedule="alternating"``).
    """
    out = model(x, batch)
    b = batch if batch.dim() == 1 else batch.argmax(1)
    adv = model.fe.adversary
    adv_train = F.cross_entropy(adv(out["fe_acts"].detach()), b)
    frozen = {k: v.detach() for k, v in adv.named_parameters()}
    gen_logits = torch.func.functional_call(adv, frozen, (out["fe_acts"],))
    adv_gen = F.cross_entropy(gen_logits, b)
    fe_rec = F.mse_loss(out["recon_fe"], x)
    re_rec_l = F.mse_loss(out["recon_re"], x)
    re_ce = F.cross_entropy(out["re_batch_logits"], b)
    kl = model.re.kl()
    fe_total = lambda_rec * fe_rec - (lambda_gen * adv_gen if adversarial else 0.0)
    losses = {
        "fe_recon": fe_rec,
        "adv_ce": adv_train,
        "re_recon": re_rec_l,
        "re_batch_ce": re_ce,
        "kl": kl,
    }
    total = fe_total + re_rec * re_rec_l + re_batch * re_ce + kl
    if train_adversary:
        total = total + adv_train
    if labels is not None and model.n_classes > 0:
        cls = F.cross_entropy(out["fe_class_logits"], labels)
        mec = F.cross_entropy(out["mec_logits"], labels)
        losses.update(fe_class_ce=cls, mec_ce=mec)
        total = total + lambda_cls * cls + mec
    losses["loss"] = total
    return losses


def medl_alternating_step(
    model: MEDL,
    x: Tensor,
    batch: Tensor,
    labels: Tensor | None,
    opt: torch.optim.Optimizer,
    opt_adv: torch.optim.Optimizer,
    **loss_kw,
) -> dict[str, Tensor]:
    """One step of the official scMEDAL-FE alternating schedule.

    (1) The adversary takes a step of ``opt_adv`` on the batch CE of the encoder activations (no
    gradient reaches the encoder); (2) a fresh forward pass, and ``opt`` (every other parameter)
    takes a step on the autoencoder losses, the generator term against the *updated* adversary.
    Returns the detached losses of phase (2) plus ``adv_step_ce``, the CE phase (1) minimised.
    """
    with torch.no_grad():
        acts = torch.cat(model.fe.encode(x), dim=1)
    opt_adv.zero_grad(set_to_none=True)
    b_lab = batch if batch.dim() == 1 else batch.argmax(1)
    adv_ce = F.cross_entropy(model.fe.adversary(acts), b_lab)
    adv_ce.backward()
    opt_adv.step()
    opt.zero_grad(set_to_none=True)
    out = medl_loss(model, x, batch, labels, train_adversary=False, **loss_kw)
    out["loss"].backward()
    opt.step()
    res = {k: v.detach() for k, v in out.items()}
    res["adv_step_ce"] = adv_ce.detach()
    return res


def fit_medl(
    model: MEDL,
    x: Tensor,
    batch: Tensor,
    labels: Tensor | None = None,
    *,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 1e-3,
    lr_adversary: float | None = None,
    schedule: str = "alternating",
    seed: int = 0,
    **loss_kw,
) -> MEDL:
    """Minibatch Adam on :func:`medl_loss` (the helper the tests and ``reproduce`` use).

    ``schedule="alternating"`` (default) is the official scMEDAL-FE step
    (``DomainAdversarialAE.train_step``): per minibatch, (1) the adversary takes an Adam step (its
    own optimiser, learning rate ``lr_adversary``, default ``lr``) on the batch CE of the encoder
    activations, with no gradient to the encoder; (2) a fresh forward pass, and every other
    parameter takes a step of a second Adam on the autoencoder losses, the generator term using
    the *updated* adversary.
    ``schedule="joint"`` takes both in one optimiser step on the pre-update adversary (the
    single-step variant this package used first; also what ``recipe.step`` / ``train`` does).
    """
    if x.shape[0] != batch.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but batch has {batch.shape[0]}")
    if schedule not in ("alternating", "joint"):
        raise ValueError(f"schedule must be 'alternating' or 'joint', got {schedule!r}")
    g = torch.Generator().manual_seed(seed)
    adv_params = list(model.fe.adversary.parameters())
    adv_ids = {id(p) for p in adv_params}
    if schedule == "joint":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.Adam([p for p in model.parameters() if id(p) not in adv_ids], lr=lr)
        opt_adv = torch.optim.Adam(adv_params, lr=lr if lr_adversary is None else lr_adversary)
    model.train()
    n = x.shape[0]
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=g)
        xb, bb = x[idx], batch[idx]
        lb = None if labels is None else labels[idx]
        if schedule == "alternating":
            medl_alternating_step(model, xb, bb, lb, opt, opt_adv, **loss_kw)
        else:
            opt.zero_grad()
            medl_loss(model, xb, bb, lb, **loss_kw)["loss"].backward()
            opt.step()
    model.eval()
    return model


# --------------------------------------------------------------------------- evaluation helpers
def probe_accuracy(z: Tensor, y: Tensor, *, seed: int = 0, folds: int = 3) -> float:
    """Cross-validated logistic-regression accuracy of predicting ``y`` from ``z`` (sklearn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(
        cross_val_score(
            LogisticRegression(max_iter=300), z.double().numpy(), y.numpy(), cv=cv
        ).mean()
    )


def batch_silhouette(z: Tensor, batch: Tensor) -> float:
    """Silhouette score of the batch labels in latent space (lower = better mixed)."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(z.double().numpy(), batch.numpy()))


# --------------------------------------------------------------------------- recipe
@dataclass
class MEDLConfig(TrainConfig):
    """Tiny preset: simulated 300 cells x 30 genes, 3 batches, 3 types, widths (32, 16), latent 2.

    ``lambda_rec`` defaults to 1 in the tiny preset (the AML config uses 4000 with Adam 1e-4 and
    hundreds of epochs; at a few hundred steps that ratio leaves the adversary without effect).
    """

    n_cells: int = 300
    n_genes: int = 30
    n_batches: int = 3
    n_types: int = 3
    hidden: tuple[int, ...] = (32, 16)
    latent: int = 2
    lambda_rec: float = 1.0
    lambda_gen: float = 1.0
    lambda_cls: float = 1.0
    use_labels: bool = False
    schedule: str = "alternating"
    lr_adversary: float | None = None
    steps: int = 150
    batch_size: int = 128
    lr: float = 3e-3


@register(
    "medl",
    domain="causal",
    paper="Mixed Effects Deep Learning for the interpretable analysis of single cell RNA "
    "sequencing data by quantifying and visualizing batch effects",
    authors="Andrade, Nguyen, Montillo",
    year=2024,
    arxiv="2411.06635",
    code_url="https://github.com/DeepLearningForPrecisionHealthLab/scMEDAL_for_scRNAseq",
    symmetry="RE path equivariant to batch relabelling; FE latent batch-invariant (adversarial)",
    baseline="plain autoencoder (no adversary)",
    tags=("single-cell", "mixed-effects", "adversarial"),
)
class MEDLRecipe(Recipe):
    """scMEDAL FE + RE autoencoders and the mixed-effects classifier on simulated counts."""

    Config = MEDLConfig
    presets = {
        "tiny": {},
        "full": {
            "n_cells": 2000,
            "n_genes": 200,
            "n_batches": 6,
            "n_types": 5,
            "hidden": (512, 132),
            "latent": 2,
            "steps": 3000,
            "batch_size": 512,
            "lr": 1e-3,
            "use_labels": True,
        },
    }

    def _data(self, cfg, split):
        from invariance.causal.data.scrna import make_scrna_counts

        # one simulated population; splits are disjoint cell subsets (60/20/20)
        d = make_scrna_counts(
            cfg.n_cells, cfg.n_genes, n_batches=cfg.n_batches, n_types=cfg.n_types, seed=cfg.seed
        )
        n = cfg.n_cells
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 7))
        a, b = int(0.6 * n), int(0.8 * n)
        idx = {"train": perm[:a], "val": perm[a:b], "test": perm[b:]}[split]
        return d["x"][idx], d["batch"][idx], d["cell_type"][idx]

    def make_data(self, cfg, split):
        x, b, c = self._data(cfg, split)
        return torch.utils.data.TensorDataset(x, b, c)

    def build(self, cfg):
        self._loss_kw = {
            "lambda_rec": cfg.lambda_rec,
            "lambda_gen": cfg.lambda_gen,
            "lambda_cls": cfg.lambda_cls,
        }
        self._use_labels = cfg.use_labels
        return MEDL(
            n_genes=cfg.n_genes,
            n_batches=cfg.n_batches,
            n_classes=cfg.n_types if cfg.use_labels else 0,
            hidden=tuple(cfg.hidden),
            latent=cfg.latent,
        )

    def step(self, model, batch):
        x, b, c = batch
        labels = c if getattr(self, "_use_labels", False) else None
        return medl_loss(model, x, b, labels, **getattr(self, "_loss_kw", {}))

    def optimizer(self, cfg, model):
        if cfg.schedule not in ("alternating", "joint"):
            raise ValueError(f"schedule must be 'alternating' or 'joint', got {cfg.schedule!r}")
        if cfg.schedule == "joint":
            return super().optimizer(cfg, model)
        from invariance.core.train import NamedOptimizers

        adv = list(model.fe.adversary.parameters())
        ids = {id(p) for p in adv}
        rest = [p for p in model.parameters() if id(p) not in ids]
        lr_adv = cfg.lr if cfg.lr_adversary is None else cfg.lr_adversary
        return NamedOptimizers(
            main=torch.optim.AdamW(rest, lr=cfg.lr, weight_decay=cfg.weight_decay),
            adversary=torch.optim.AdamW(adv, lr=lr_adv, weight_decay=cfg.weight_decay),
        )

    def train_step(self, model, batch, optimizer, step):
        if not hasattr(optimizer, "items"):  # joint schedule: one optimiser, one loss
            optimizer.zero_grad(set_to_none=True)
            out = self.step(model, batch)
            out["loss"].backward()
            optimizer.step()
            return {k: v.detach() for k, v in out.items()}
        x, b, c = batch
        labels = c if getattr(self, "_use_labels", False) else None
        return medl_alternating_step(
            model, x, b, labels, optimizer["main"], optimizer["adversary"],
            **getattr(self, "_loss_kw", {}),
        )

    def metrics(self, model, dataset):
        x, b, c = dataset.tensors
        zf, zr = model.embed(x, b)
        return {
            "fe_batch_probe": probe_accuracy(zf, b),
            "re_batch_probe": probe_accuracy(zr, b),
            "fe_type_probe": probe_accuracy(zf, c),
            "mec_type_probe": probe_accuracy(torch.cat([zf, zr], 1), c),
        }

    def check(self, model, cfg):
        from invariance.core import groups as G
        from invariance.core.testing import as_float64, check_invariant, check_not_invariant

        m = as_float64(model).eval()
        blk = m.re.enc_re[0]
        g = torch.Generator().manual_seed(cfg.seed)
        h = torch.randn(16, blk.features, generator=g, dtype=torch.float64)
        z = torch.nn.functional.one_hot(
            torch.randint(0, blk.n_batches, (16,), generator=g), blk.n_batches
        ).double()
        wg, wb = blk.gamma_loc.detach(), blk.beta_loc.detach()

        def re_fn(h, z, wg, wb):
            return blk.bn(h) * (1 + z @ wg) + z @ wb

        def relabel_cols(p, t):
            return t[:, p]

        def relabel_rows(p, t):
            return t[p]

        def shuffle_cells(p, t):  # re-assign batch one-hots: a different batch per cell
            return t.roll(1, dims=1)

        zero = torch.zeros_like(wg)
        x = torch.randn(16, cfg.n_genes, generator=g, dtype=torch.float64)
        bl = z.argmax(1)
        return [
            check_invariant(
                "RE block: batch relabelling (Z columns with W rows)",
                re_fn,
                (h, z, wg, wb),
                G.Permutation(dim=0, n=blk.n_batches),
                (None, relabel_cols, relabel_rows, relabel_rows),
            ),
            check_invariant(
                "RE block with zero posterior: invariant to the batch one-hot",
                re_fn,
                (h, z, zero, zero),
                G.Permutation(dim=0, n=blk.n_batches),
                (None, shuffle_cells, None, None),
            ),
            check_not_invariant(
                "RE block with its posterior: changes with the batch (negative control)",
                re_fn,
                (h, z, wg + 0.1, wb + 0.1),
                G.Permutation(dim=0, n=blk.n_batches),
                (None, shuffle_cells, None, None),
            ),
            check_invariant(
                "FE latent does not read the batch",
                lambda x, b: m(x, b)["z_fe"],
                (x, bl),
                G.Permutation(dim=0),
                (None, "nodes"),
            ),
            check_not_invariant(
                "RE latent reads the batch (negative control)",
                lambda x, b: m(x, b)["z_re"],
                (x, bl),
                G.Permutation(dim=0),
                (None, lambda p, t: (t + 1) % blk.n_batches),
            ),
        ]

    def reproduce(self, cfg, run, *, quick):
        import time as _time

        from invariance.causal.data.scrna import (
            load_pbmc68k_reduced,
            make_scrna_counts,
            pbmc68k_path,
        )

        t0 = _time.perf_counter()
        sets = {}
        d = make_scrna_counts(
            cfg.n_cells if quick else 2000,
            cfg.n_genes if quick else 200,
            n_batches=cfg.n_batches if quick else 6,
            n_types=cfg.n_types if quick else 5,
            seed=cfg.seed,
        )
        sets["simulated"] = (d["x"], d["batch"], d["cell_type"])
        if pbmc68k_path() is not None:
            p = load_pbmc68k_reduced(3, seed=cfg.seed)
            sets["pbmc68k_pseudobatch"] = (p["x"], p["batch"], p["cell_type"])
        folds = 2 if quick else 5
        # full: 600 steps per fit (25 fits: about 6 min of CPU at idle with widths (32, 16))
        steps = cfg.steps if quick else max(cfg.steps, 600)
        details: dict = {}
        plots: list[str] = []
        for name, (x, b, c) in sets.items():
            if name != "simulated":
                if quick:
                    x = x[:, :100]  # quick: first 100 genes of the real set
                else:  # full: the 200 most variable genes (the official pipeline uses HVGs)
                    x = x[:, x.var(0).argsort(descending=True)[:200].sort().values]
            n = x.shape[0]
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
            # the single-step ("joint") adversarial schedule is measured beside the official
            # alternating one on the simulated set
            variants = [("medl", True, "alternating"), ("ae", False, "alternating")]
            if name == "simulated":
                variants.insert(1, ("medl_joint", True, "joint"))
            rows = []
            for k in range(1 if (quick and name != "simulated") else folds):
                test = perm[k::folds]
                train = torch.cat([perm[j::folds] for j in range(folds) if j != k])
                res = {}
                for key, adversarial, schedule in variants:
                    torch.manual_seed(cfg.seed + k)
                    model = MEDL(
                        n_genes=x.shape[1],
                        n_batches=int(b.max()) + 1,
                        hidden=tuple(cfg.hidden),
                        latent=cfg.latent,
                    )
                    fit_medl(
                        model,
                        x[train],
                        b[train],
                        steps=steps,
                        lr=cfg.lr,
                        batch_size=cfg.batch_size,
                        seed=cfg.seed + k,
                        adversarial=adversarial,
                        schedule=schedule,
                        lambda_rec=cfg.lambda_rec,
                        lambda_gen=cfg.lambda_gen,
                    )
                    zf, zr = model.embed(x[test], b[test])
                    res[f"{key}_batch_probe"] = probe_accuracy(zf, b[test])
                    res[f"{key}_type_probe"] = probe_accuracy(zf, c[test])
                    res[f"{key}_batch_silhouette"] = batch_silhouette(zf, b[test])
                    if key == "medl":
                        res["re_batch_probe"] = probe_accuracy(zr, b[test])
                        res["mec_type_probe"] = probe_accuracy(torch.cat([zf, zr], 1), c[test])
                        if k == 0:
                            plots.append(self._plot(run, name, zf, zr, b[test], c[test]))
                rows.append(res)
            details[name] = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
            details[name]["folds"] = len(rows)
            details[name]["steps"] = steps
            details[name]["genes"] = int(x.shape[1])
        sim = details["simulated"]
        return ReproduceResult(
            task=f"batch removal in the FE latent (alternating schedule), simulated counts, "
            f"{folds}-fold",
            metric="batch probe accuracy on the latent (lower = more batch-invariant)",
            method="MEDL fixed-effects latent",
            baseline="plain autoencoder latent",
            method_value=sim["medl_batch_probe"],
            baseline_value=sim["ae_batch_probe"],
            higher_is_better=False,
            seconds=_time.perf_counter() - t0,
            details=details,
            plots=[p for p in plots if p],
        )

    @staticmethod
    def _plot(run, name, zf, zr, b, c) -> str:
        try:
            from invariance.core.io import plt as _plt

            plt = _plt()
            fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
            axes[0].scatter(zf[:, 0], zf[:, 1], c=b, s=6, cmap="tab10")
            axes[0].set_title("FE latent, colour = batch")
            axes[1].scatter(zf[:, 0], zf[:, 1], c=c, s=6, cmap="tab10")
            axes[1].set_title("FE latent, colour = cell type")
            axes[2].scatter(zr[:, 0], zr[:, 1], c=b, s=6, cmap="tab10")
            axes[2].set_title("RE latent, colour = batch")
            return run.savefig(fig, f"latents_{name}")
        except Exception:  # pragma: no cover - plotting is optional
            return ""
