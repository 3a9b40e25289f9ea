r"""VIAT: viewpoint-invariant adversarial training with GMVFool (Ruan et al., ICCV 2023).

Paper: "Towards Viewpoint-Invariant Visual Recognition via Adversarial Training" (Shouwei Ruan,
Yinpeng Dong, Hang Su, Jianteng Peng, Ning Chen, Xingxing Wei), arXiv:2307.10235. Official code:
https://github.com/Heathcliff-saku/VIAT (no licence file; read only, nothing copied).

Mechanism.

* **Viewpoints** ``v = (roll, yaw, pitch, distance, shift_x, shift_y)`` live in a box:
  ``v = a * tanh(z) + b`` with ``a = (30°, 180°, 70°, 1, 0.5, 0.5)``, ``b = (0, 0, 0, 4, 0, 0)``
  (:func:`viewpoint`), so the search runs in unbounded ``z``.
* **GMVFool** (:func:`gmvfool`) finds, per object, a distribution of adversarial viewpoints: a
  product over the 6 dimensions of 1-D Gaussian mixtures with ``K`` components (means ``mu``,
  scales ``sigma``, weights ``omega`` fixed at ``1/K``), maximising
  ``E_z[CE(f(render(v(z))), y)] + lambda * H(p_v)``. The optimiser is the PEPG flavour of
  natural evolution strategies (:func:`nes_step`): the population is the ``K`` component
  centres (per-component baselines) plus ``(popsize - 1) / 2`` antithetic pairs whose
  component is drawn per dimension; fitness becomes centred ranks; the mean moves by the
  rank differences of the pairs times their perturbations (divided by ``omega``) plus the
  entropy gradient, with momentum 0.9 and a learning rate decayed by 0.99 per iteration; the
  scales move by the pairs' mean rank over the centre's baseline (step 0.2, at most 20 % per
  iteration, capped at 0.15, decayed by 0.999 above 0.01). The entropy is a Monte-Carlo estimate
  over the population, tanh Jacobian included (:func:`gmm_entropy`), differentiated by autograd.
  As in the official code, the distribution kept for each component is the best individual of
  the last iteration (``best_mu``), next to the NES mean.
* **VIAT** (:func:`sample_pool_views`): a pool of per-object distributions, re-optimised by
  GMVFool every epoch with warm starts; each training batch adds renders drawn from the pool, with
  **distribution sharing** (with probability ``share_rate`` an object uses the distribution of
  another object of its class), one component drawn per dimension; the loss is cross-entropy on
  the natural and adversarial images (the official final loop), or the TRADES form (CE on the
  natural view + ``beta`` KL to the adversarial view) with ``objective="trades"``.

Tested properties: the viewpoint box and its values at ``z = 0`` and ``z = 1``; centred ranks;
the entropy estimator (difference of two scales equals ``log(sigma2 / sigma1)``, gradient
``1 / sigma``); NES climbs an analytic fitness; one NES step equals the official PEPG step on the
same draws (golden values recorded by running the official class); GMVFool's distribution has a
higher loss than random viewpoints for a trained classifier; the VIAT sampler shares
distributions only within a class.

Deviations: the renderer is :mod:`invariance.vision.render` (analytic primitives, white
background) instead of per-object NeRFs, and no natural-image background is pasted into the
renders (there is no natural-image set offline; the natural images are renders from a typical
view band). The official sigma-update guard ``sigma.all() > sigma_min`` is always true; here
the update always runs too, and the decay is element-wise (as in the official code), so the
behaviour is the same; the entropy is divided by ``popsize`` as in the official code, not by
the population size ``K + popsize - 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.vision._checks import check_int, check_number, check_tensor
from invariance.vision.render import Scene, look_at, render

__all__ = [
    "VIEW_SCALE",
    "VIEW_OFFSET",
    "viewpoint",
    "random_viewpoints",
    "centered_ranks",
    "GMMViews",
    "gmm_entropy",
    "nes_population",
    "nes_step",
    "gmvfool",
    "sample_pool_views",
    "viat_loss",
    "ViewClassifier",
    "natural_viewpoints",
    "render_views",
]

#: half-widths ``a`` and centres ``b`` of the viewpoint box ``v = a * tanh(z) + b``
VIEW_SCALE = (30.0, 180.0, 70.0, 1.0, 0.5, 0.5)
VIEW_OFFSET = (0.0, 0.0, 0.0, 4.0, 0.0, 0.0)


def viewpoint(z: Tensor) -> Tensor:
    """Viewpoints ``(roll, yaw, pitch, distance, shift_x, shift_y)`` from search variables
    ``z`` of shape ``(..., 6)``."""
    z = check_tensor(z, "z")
    if z.shape[-1] != 6:
        raise ValueError(f"z must have 6 entries in its last dimension, got {tuple(z.shape)}")
    a = torch.tensor(VIEW_SCALE, dtype=z.dtype)
    b = torch.tensor(VIEW_OFFSET, dtype=z.dtype)
    return a * torch.tanh(z) + b


def random_viewpoints(n: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``n`` viewpoints uniform over the whole box (the official "full" random sampler)."""
    n = check_int(n, "n")
    a = torch.tensor(VIEW_SCALE)
    b = torch.tensor(VIEW_OFFSET)
    return b + a * (2 * torch.rand(n, 6, generator=generator) - 1)


def centered_ranks(x: Tensor) -> Tensor:
    """Ranks along the last dimension scaled to ``[-0.5, 0.5]`` (ties by position, as the
    ``argsort`` of the evolution-strategies code)."""
    x = check_tensor(x, "x")
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (the population)")
    n = x.shape[-1]
    if n < 2:
        raise ValueError(f"x needs at least 2 entries in its last dimension, got {n}")
    order = x.argsort(dim=-1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(n).expand_as(order).contiguous())
    return ranks.to(x.dtype) / (n - 1) - 0.5


@dataclass
class GMMViews:
    """Per-object product-of-mixtures distributions over ``z``: ``mu``, ``sigma``, ``omega`` of
    shape ``(M, K, 6)`` (``M`` objects, ``K`` components)."""

    mu: Tensor
    sigma: Tensor
    omega: Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_tensor(self.mu, "mu", dims=3)
        check_tensor(self.sigma, "sigma", dims=3)
        if self.sigma.shape != self.mu.shape:
            raise ValueError(f"sigma must have shape {tuple(self.mu.shape)}")
        if bool((self.sigma < 0).any()):
            raise ValueError("sigma must be non-negative")
        if self.omega is None:
            self.omega = torch.full_like(self.mu, 1.0 / self.mu.shape[1])
        check_tensor(self.omega, "omega", dims=3)

    @staticmethod
    def init(
        n_objects: int,
        k: int = 5,
        *,
        sigma_init: float = 0.1,
        random_mu: bool = True,
        generator: torch.Generator | None = None,
    ) -> GMMViews:
        """The official start: ``mu ~ U(-1, 1)`` (or 0), ``sigma = sigma_init``."""
        n_objects, k = check_int(n_objects, "n_objects"), check_int(k, "k")
        check_number(sigma_init, "sigma_init", lo=0.0, lo_open=True)
        mu = (
            2 * torch.rand(n_objects, k, 6, generator=generator) - 1
            if random_mu
            else torch.zeros(n_objects, k, 6)
        )
        return GMMViews(mu, torch.full_like(mu, sigma_init))

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` search variables per object, ``(M, n, 6)``: one component drawn per dimension
        (weights ``omega``), then ``z = mu + sigma * N(0, 1)``."""
        n = check_int(n, "n")
        m, k, d = self.mu.shape
        w = self.omega.permute(0, 2, 1).reshape(m * d, k)
        comp = torch.multinomial(w, n, replacement=True, generator=generator)
        comp = comp.reshape(m, d, n).permute(0, 2, 1)
        rho = torch.randn(m, n, d, generator=generator, dtype=self.mu.dtype)
        mu = self.mu.gather(1, comp)
        return mu + self.sigma.gather(1, comp) * rho


def nes_population(
    views: GMMViews, popsize: int, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Standard-normal draws ``r`` and component ids ``comp`` (both ``(M, K + 2n, 6)``,
    ``n = (popsize - 1) / 2``): the ``K`` centres first (``r = 0``, component ``k``), then the
    ``n`` positive and the ``n`` mirrored negative perturbations sharing their components."""
    popsize = check_int(popsize, "popsize", lo=3)
    if popsize % 2 == 0:
        raise ValueError(f"popsize must be odd (centres + antithetic pairs), got {popsize}")
    m, k, d = views.mu.shape
    n = (popsize - 1) // 2
    r = torch.randn(m, n, d, generator=generator, dtype=views.mu.dtype)
    w = views.omega.permute(0, 2, 1).reshape(m * d, k)
    comp = torch.multinomial(w, n, replacement=True, generator=generator)
    comp = comp.reshape(m, d, n).permute(0, 2, 1)
    centres = torch.arange(k).view(1, k, 1).expand(m, k, d)
    r_full = torch.cat([torch.zeros(m, k, d, dtype=r.dtype), r, -r], 1)
    return r_full, torch.cat([centres, comp, comp], 1)


def population_points(views: GMMViews, r: Tensor, comp: Tensor) -> Tensor:
    """``z = mu[comp] + sigma[comp] * r`` for a population from :func:`nes_population`."""
    return views.mu.gather(1, comp) + views.sigma.gather(1, comp) * r


def gmm_entropy(
    mu: Tensor, sigma: Tensor, omega: Tensor, r: Tensor, comp: Tensor, popsize: int
) -> Tensor:
    """Monte-Carlo entropy of the viewpoint distribution per object (``(M,)``): per population
    member and dimension ``-log omega_k + log sigma_k + r^2 / 2 + log(1 - tanh^2(mu_k + sigma_k
    r))`` (``+1e-8`` inside the logs, as the official code), summed and divided by
    ``popsize``; differentiable in ``mu`` and ``sigma``."""
    mk, sk, wk = mu.gather(1, comp), sigma.gather(1, comp), omega.gather(1, comp)
    inside = 1 - torch.tanh(mk + sk * r) ** 2 + 1e-8
    neg_logp = -torch.log(wk + 1e-8) + torch.log(sk + 1e-8) + 0.5 * r**2 + torch.log(inside)
    return neg_logp.sum((1, 2)) / popsize


@dataclass
class NESState:
    """Optimiser state of :func:`nes_step`: momentum ``velocity`` and learning rate ``lr``."""

    velocity: Tensor
    lr: float


def nes_step(
    views: GMMViews,
    r: Tensor,
    comp: Tensor,
    fitness: Tensor,
    state: NESState,
    *,
    popsize: int,
    lam_mu: float = 1e-4,
    lam_sigma: float = 1e-4,
    sigma_alpha: float = 0.2,
    sigma_max_change: float = 0.2,
    sigma_max: float = 0.15,
    sigma_decay: float = 0.999,
    sigma_limit: float = 0.01,
    lr_decay: float = 0.99,
    momentum: float = 0.9,
) -> tuple[GMMViews, NESState, Tensor]:
    """One PEPG update of every object's mixture from the population's ``fitness`` (``(M, K +
    2n)``, higher = more adversarial). Returns the new distribution, the new optimiser state
    and ``best_mu`` (per component and dimension, the best perturbed individual if it beats the
    component's centre, else the centre)."""
    m, k, d = views.mu.shape
    n = (r.shape[1] - k) // 2
    if fitness.shape != (m, k + 2 * n):
        raise ValueError(f"fitness must have shape {(m, k + 2 * n)}, got {tuple(fitness.shape)}")
    check_tensor(fitness, "fitness")
    with torch.enable_grad():  # the entropy gradient, also under an outer no_grad
        mu = views.mu.detach().clone().requires_grad_(True)
        sigma = views.sigma.detach().clone().requires_grad_(True)
        h = gmm_entropy(mu, sigma, views.omega, r, comp, popsize).sum()
        g_h_mu, g_h_sigma = torch.autograd.grad(h, (mu, sigma))
    ranks = centered_ranks(fitness)
    base, rp, rm = ranks[:, :k], ranks[:, k : k + n], ranks[:, k + n :]
    c = comp[:, k : k + n]  # (M, n, 6), shared by the pair
    onehot = F.one_hot(c, k).to(r.dtype)  # (M, n, 6, K)
    sig_c = views.sigma.gather(1, c)
    eps = sig_c * r[:, k : k + n]
    # mean: sum over the pairs of a component of (R+ - R-) * eps+, divided by omega
    g_mu = torch.einsum("mndk,mnd->mkd", onehot, (rp - rm)[..., None] * eps) / views.omega
    velocity = momentum * state.velocity + (1 - momentum) * (g_mu + lam_mu * g_h_mu)
    new_mu = views.mu + state.lr * velocity
    # scales: ((eps^2 - sigma^2) / sigma) * omega against the mean pair rank over the baseline
    om_c = views.omega.gather(1, c)
    s_term = (eps**2 - sig_c**2) / sig_c * om_c
    b_c = base.gather(1, c.reshape(m, -1)).reshape(m, n, d)
    rs = (rp + rm)[..., None] / 2 - b_c
    counts = onehot.sum(1).permute(0, 2, 1)  # (M, K, 6) pairs per component and dimension
    num = torch.einsum("mndk,mnd->mkd", onehot, rs * s_term)
    delta = torch.where(counts > 0, num / (2 * counts).clamp_min(1), torch.zeros_like(num))
    change = sigma_alpha * (delta + lam_sigma * g_h_sigma)
    lim = sigma_max_change * views.sigma
    change = torch.maximum(torch.minimum(change, lim), -lim)
    new_sigma = (views.sigma + change).clamp(0.0, sigma_max)
    new_sigma = torch.where(new_sigma > sigma_limit, new_sigma * sigma_decay, new_sigma)
    # best individual per (component, dimension)
    both = torch.cat([rp, rm], 1)[..., None].expand(m, 2 * n, d)
    eps2 = torch.cat([eps, -eps], 1)
    oh2 = torch.cat([onehot, onehot], 1)
    masked = torch.where(oh2 > 0, both[..., None], torch.full_like(oh2, -float("inf")))
    best_val, best_idx = masked.max(1)  # (M, 6, K)
    best_eps = eps2.gather(1, best_idx.permute(0, 2, 1).reshape(m, k, d).clamp_max(2 * n - 1))
    best_val = best_val.permute(0, 2, 1)
    take = torch.isfinite(best_val) & (best_val > base[..., None])
    best_mu = torch.where(take, views.mu + best_eps, views.mu)
    new_state = NESState(velocity.detach(), state.lr * lr_decay if lr_decay < 1 else state.lr)
    return GMMViews(new_mu.detach(), new_sigma.detach(), views.omega), new_state, best_mu.detach()


@dataclass
class GMVFoolResult:
    """What :func:`gmvfool` found: the distribution to sample adversarial views from (``views``,
    whose ``mu`` is the official ``best_mu``), the NES mean distribution (``mean_views``) and
    the mean/max fitness per iteration (``(iters, M)`` each)."""

    views: GMMViews
    mean_views: GMMViews
    mean_fitness: Tensor
    max_fitness: Tensor


def gmvfool(
    fitness_fn: Callable[[Tensor], Tensor],
    n_objects: int,
    *,
    k: int = 5,
    popsize: int = 21,
    iters: int = 20,
    lr: float = 0.1,
    lam: float = 1e-4,
    sigma_init: float = 0.1,
    start: GMMViews | None = None,
    random_mu: bool = True,
    generator: torch.Generator | None = None,
) -> GMVFoolResult:
    """GMVFool on ``n_objects`` objects at once. ``fitness_fn(v)`` takes viewpoints of shape
    ``(M, P, 6)`` (``P = K + popsize - 1``) and returns the loss to maximise, ``(M, P)``
    (cross-entropy of the classifier on the renders). ``start`` warm-starts from a previous
    distribution (VIAT's pool)."""
    n_objects = check_int(n_objects, "n_objects")
    iters = check_int(iters, "iters")
    check_number(lr, "lr", lo=0.0, lo_open=True)
    check_number(lam, "lam", lo=0.0)
    if start is None:
        views = GMMViews.init(
            n_objects, k, sigma_init=sigma_init, random_mu=random_mu, generator=generator
        )
    else:
        if not isinstance(start, GMMViews):
            raise TypeError(f"start must be a GMMViews, got {type(start).__name__}")
        if start.mu.shape[0] != n_objects:
            raise ValueError(f"start holds {start.mu.shape[0]} objects, expected {n_objects}")
        views = start
    state = NESState(torch.zeros_like(views.mu), float(lr))
    best = views.mu
    means, maxes = [], []
    for _ in range(iters):
        r, comp = nes_population(views, popsize, generator=generator)
        z = population_points(views, r, comp)
        with torch.no_grad():
            fit = fitness_fn(viewpoint(z))
        fit = check_tensor(fit, "fitness_fn(v)").to(views.mu.dtype)
        if fit.shape != z.shape[:2]:
            raise ValueError(
                f"fitness_fn must return shape {tuple(z.shape[:2])}, got {tuple(fit.shape)}"
            )
        means.append(fit.mean(1))
        maxes.append(fit.max(1).values)
        views, state, best = nes_step(
            views, r, comp, fit, state, popsize=popsize, lam_mu=lam, lam_sigma=lam
        )
    return GMVFoolResult(
        GMMViews(best, views.sigma, views.omega), views, torch.stack(means), torch.stack(maxes)
    )


def sample_pool_views(
    pool: GMMViews,
    objects: Tensor,
    labels: Tensor,
    *,
    share_rate: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Adversarial viewpoints for the training ``objects`` (indices into ``pool``): with
    probability ``share_rate`` each uses the distribution of a random object of the same class
    (``labels[i]`` is the class of pool object ``i``). Returns the viewpoints ``(B, 6)`` and the
    pool index whose distribution each one used."""
    check_number(share_rate, "share_rate", lo=0.0, hi=1.0)
    if objects.dtype != torch.long or objects.dim() != 1 or objects.numel() == 0:
        raise ValueError("objects must be a non-empty 1-D long tensor of pool indices")
    if labels.dtype != torch.long or labels.shape != (pool.mu.shape[0],):
        raise ValueError(f"labels must be a long tensor of shape ({pool.mu.shape[0]},)")
    if bool(((objects < 0) | (objects >= pool.mu.shape[0])).any()):
        raise ValueError(f"objects must lie in 0..{pool.mu.shape[0] - 1}")
    b = objects.numel()
    share = torch.rand(b, generator=generator) < share_rate
    same = labels[None, :] == labels[objects][:, None]  # (B, M) candidates of the same class
    pick = torch.multinomial(same.to(torch.float64), 1, generator=generator).squeeze(1)
    src = torch.where(share, pick, objects)
    sub = GMMViews(pool.mu[src], pool.sigma[src], pool.omega[src])
    z = sub.sample(1, generator=generator)[:, 0]
    return viewpoint(z), src


def viat_loss(
    logits_nat: Tensor,
    logits_adv: Tensor,
    target_nat: Tensor,
    target_adv: Tensor,
    *,
    objective: str = "ce",
    beta: float = 6.0,
) -> Tensor:
    """The outer minimisation. ``"ce"``: cross-entropy over the natural and adversarial images
    together (the official final loop). ``"trades"``: cross-entropy on the natural images plus
    ``beta`` times ``KL(p(adversarial) || p(natural))`` for adversarial views of the same
    objects (``target_adv == target_nat`` then)."""
    if objective not in ("ce", "trades"):
        raise ValueError(f"objective must be 'ce' or 'trades', got {objective!r}")
    check_number(beta, "beta", lo=0.0)
    for name, lg, tg in (
        ("logits_nat", logits_nat, target_nat),
        ("logits_adv", logits_adv, target_adv),
    ):
        check_tensor(lg, name, dims=2, expected="of shape (B, classes)")
        tname = name.replace("logits", "target")
        check_tensor(tg, tname, dims=1, floating=False)
        if tg.is_floating_point() or tg.dtype == torch.bool:
            raise TypeError(f"{tname} must hold integer class ids, got dtype {tg.dtype}")
        if len(tg) != len(lg):
            raise ValueError(
                f"{tname} must have one entry per row of {name}: {len(tg)} vs {len(lg)}"
            )
        if bool(((tg < 0) | (tg >= lg.shape[1])).any()):
            raise ValueError(f"{tname} must lie in 0..{lg.shape[1] - 1}")
    if logits_adv.shape[1] != logits_nat.shape[1]:
        raise ValueError(
            f"logits_adv must have as many classes as logits_nat: {logits_adv.shape[1]} vs "
            f"{logits_nat.shape[1]}"
        )
    if objective == "ce":
        return F.cross_entropy(
            torch.cat([logits_nat, logits_adv]), torch.cat([target_nat, target_adv])
        )
    if logits_adv.shape != logits_nat.shape:
        raise ValueError(
            "logits_adv must have the shape of logits_nat for trades (one adversarial view per "
            f"natural image), got {tuple(logits_adv.shape)} vs {tuple(logits_nat.shape)}"
        )
    kl = F.kl_div(F.log_softmax(logits_adv, -1), F.softmax(logits_nat, -1), reduction="batchmean")
    return F.cross_entropy(logits_nat, target_nat) + beta * kl


# ------------------------------------------------------------------ rendered views
class ViewClassifier(nn.Module):
    """A small CNN (3 conv blocks, global pooling, linear) for rendered objects."""

    def __init__(self, n_classes: int, width: int = 16) -> None:
        super().__init__()
        w = width

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)
            )

        self.features = nn.Sequential(block(3, w), block(w, 2 * w), block(2 * w, 4 * w))
        self.head = nn.Linear(4 * w, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean((-2, -1)))


def natural_viewpoints(n: int, *, generator: torch.Generator | None = None) -> Tensor:
    """The natural view band: yaw all round, pitch 10°-40°, distance 3.5-4.5, no roll or
    shift."""
    n = check_int(n, "n")
    u = torch.rand(n, 3, generator=generator)
    v = torch.zeros(n, 6)
    v[:, 1] = 360 * u[:, 0] - 180
    v[:, 2] = 10 + 30 * u[:, 1]
    v[:, 3] = 3.5 + u[:, 2]
    return v


def render_views(scene: Scene, index: Tensor, v: Tensor, *, size: int, fov: float) -> Tensor:
    """RGB renders ``(B, 3, size, size)`` of objects ``index`` from viewpoints ``v`` (``(B,
    6)``: roll, yaw, pitch, distance, shift_x, shift_y)."""
    cam = look_at(v[:, 1], v[:, 2], v[:, 0], v[:, 3], v[:, 4:6], fov=fov)
    return render(scene, cam, size=size, scene_index=index, shadows=False)["rgb"]
