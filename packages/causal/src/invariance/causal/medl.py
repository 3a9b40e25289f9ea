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
* the whole RE path of a trained model is equivariant to batch relabelling
  (:func:`re_relabel_report`; relabelling the cells alone is the negative control)
  (``test_medl_whole_re_path_relabel_equivariance``);
* after training a probe on :math:`z_{FE}` predicts the batch worse than on a plain AE's latent
  (``test_medl_fe_removes_batch``); the alternating schedule's two optimisers are separate
  (``test_medl_alternating_schedule_separates_optimisers``) and ``train`` takes that step
  (``test_medl_train_uses_alternating_schedule``); bad inputs (``test_causal_bad_inputs.py``).

Schedule: the official alternating step (:func:`medl_alternating_step`, as in
``DomainAdversarialAE.train_step``): the adversary takes a step of its own optimiser on the
encoder activations, then a fresh forward pass and a step of a second optimiser on the
autoencoder losses against the *updated* adversary. ``schedule="joint"`` is the single-step
variant. ``train``/``reproduce`` run it through the recipe's ``train_step`` and core's ``fit``.

Deviations: (1) FE, RE and MEC are trained together in one
module (their parameters are disjoint; the MEC sees detached latents), instead of three separate
runs.
(2) Tiny presets use narrower layers, a larger learning rate and ``lambda_rec = 1`` instead of
the AML config (512/132, Adam 1e-4, ``lambda_rec = 4000``, 500 epochs): at a few hundred steps
``lambda_rec = 4000`` left the adversary without measurable effect. The paper widths are the
defaults of :class:`MEDL`; the loss defaults of :func:`medl_loss` are the AML config.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.causal._checks import check_int, check_number, check_seed
from invariance.causal._moved import moved_to_recipe
from invariance.causal.random_effects import RandomEffectBlock
from invariance.core import groups as _G
from invariance.core.testing import SymmetryReport, equivariance_error

__all__ = [
    "MEDL",
    "RandomEffectBlock",
    "medl_alternating_step",
    "medl_loss",
    "re_relabel_report",
]

#: names that moved to :mod:`invariance.causal.recipes.medl` (still importable from here)
_RECIPE_NAMES = {"MEDLConfig", "MEDLRecipe", "fit_medl", "probe_accuracy", "batch_silhouette"}


__getattr__ = moved_to_recipe(__name__, "medl", _RECIPE_NAMES)


def _mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """ReLU MLP ``in -> hidden... -> out`` (logits)."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


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
            check_int(name, v, lo)
        check_number("post_loc_init_scale", post_loc_init_scale)
        check_number("prior_scale", prior_scale, strict=True)
        check_number("kl_weight", kl_weight)
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
        if not isinstance(batch, Tensor):
            raise TypeError(f"MEDL: batch must be a Tensor, got {type(batch).__name__}")
        if batch.dim() == 2 and batch.is_floating_point() and not torch.isfinite(batch).all():
            raise ValueError("MEDL: batch (one-hot) must be finite")
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
        if not x.is_floating_point():
            raise TypeError(f"MEDL: x must be floating point, got dtype {x.dtype}")
        if x.dim() != 2 or x.shape[1] != self.n_genes or x.shape[0] == 0:
            raise ValueError(
                f"MEDL: x must have shape (N >= 1, {self.n_genes}), got {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise ValueError("MEDL: x must be finite (it holds NaN or inf)")

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
        self._check_x(x)
        check_int("target_batch", target_batch, 0, self.n_batches - 1)
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
    for name, v in (
        ("lambda_rec", lambda_rec),
        ("lambda_gen", lambda_gen),
        ("lambda_cls", lambda_cls),
        ("re_rec", re_rec),
        ("re_batch", re_batch),
    ):
        check_number(name, v)
    out = model(x, batch)
    b = batch if batch.dim() == 1 else batch.argmax(1)
    if labels is not None and (labels.dim() != 1 or labels.shape[0] != x.shape[0]):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
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
    model._check_x(x)
    model._onehot(batch, x.shape[0])
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


def _re_param_names(model: MEDL) -> list[str]:
    return [
        n
        for n, _ in model.named_parameters()
        if n.startswith("re.") and n.rsplit(".", 1)[-1] in RandomEffectBlock.RE_PARAMS
    ]


def re_relabel_report(
    model: MEDL, x: Tensor, batch: Tensor, *, trials: int = 3, seed: int = 0
) -> SymmetryReport:
    """The RE path's equivariance to relabelling batches, on ``model`` as it is.

    A random permutation ``g`` of the ``B`` batch labels relabels the cells (label ``b`` becomes
    ``g^{-1}(b)``) and reorders the rows of every RE block's ``W_gamma``, ``W_beta`` (and their
    scales) accordingly; the RE latent and reconstruction must not change. Measured in eval mode
    (posterior means) with :func:`invariance.core.testing.equivariance_error` (float64); returns
    its :class:`~invariance.core.testing.SymmetryReport`.
    """
    model._check_x(x)
    model._onehot(batch, x.shape[0])
    if batch.dim() != 1:
        raise ValueError(f"batch must hold (N,) integer labels, got shape {tuple(batch.shape)}")
    check_int("trials", trials, 1)
    seed = check_seed(seed)
    names = _re_param_names(model)
    m = copy.deepcopy(model).double().eval()
    params = dict(m.named_parameters())

    def fn(x, b, *ws):
        out = torch.func.functional_call(m, dict(zip(names, ws)), (x, b))
        return torch.cat([out["z_re"].flatten(), out["recon_re"].flatten()])

    def relabel(g, b):  # the cell of old label g[i] gets the new label i
        return torch.argsort(g)[b]

    def rows(g, w):
        return w[g]

    inputs = (x.double(), batch, *(params[n].detach() for n in names))
    act = (None, relabel, *([rows] * len(names)))
    group = _G.Permutation(dim=0, n=model.n_batches)
    return equivariance_error(fn, inputs, group, act, trials=trials, seed=seed, dtype=None)
