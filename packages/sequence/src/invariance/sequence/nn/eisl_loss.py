r"""Edit-Invariant Sequence Loss (EISL): the loss function and its drop-in module.

See :mod:`invariance.sequence.eisl` for the method docstring (paper, tested properties, deviations).
Written from the paper (arXiv:2106.15078) and the spec notes; the official function
``batch_log_EISL_cnn`` (https://github.com/guangyliu/EISL, no licence file) was run, not copied, to
record golden values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.sequence._checks import check_float, check_int, check_tensor

__all__ = ["eisl_loss", "EISLLoss", "resolve_ngrams"]


def _parse_spec(ngram: int | str | Sequence[int]) -> list[int]:
    if isinstance(ngram, bool):
        raise TypeError(
            f"ngram must be an int, a comma string or a sequence of ints, got {ngram!r}"
        )
    if isinstance(ngram, int):
        return [ngram]
    if isinstance(ngram, str):
        try:
            return [int(s) for s in ngram.split(",") if s.strip()]
        except ValueError as e:
            raise ValueError(
                f"ngram string must be comma-separated ints like '1,2,-1', got {ngram!r}"
            ) from e
    try:
        out = [int(n) for n in ngram]
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"ngram must be an int, a comma string or a sequence of ints, got {ngram!r}"
        ) from e
    return out


def resolve_ngrams(
    ngram: int | str | Sequence[int],
    out_len: int,
    tgt_len: int | None = None,
    weights: Sequence[float] | None = None,
) -> tuple[list[int], list[float]]:
    """Resolve an n-gram spec against the output length, as the official ``config_ngram_list``.

    ``n > 0`` is kept if ``n <= out_len``; ``n <= 0`` means ``out_len + n`` (0 = full length,
    -1 = one shorter) and is kept if positive; duplicates are dropped; an empty result becomes
    ``[out_len]``. N-grams longer than the target are dropped too (the official code would fail).
    ``weights`` (aligned with the spec entries) follow their n-gram; default uniform.
    Returns the ascending list and its weights.
    """
    spec = _parse_spec(ngram)
    if not spec:
        raise ValueError("ngram spec is empty")
    if weights is not None and len(weights) != len(spec):
        raise ValueError(
            f"weights has {len(weights)} entries but the ngram spec {spec} has {len(spec)}"
        )
    limit = out_len if tgt_len is None else min(out_len, tgt_len)
    chosen: dict[int, float] = {}
    for idx, n in enumerate(spec):
        real = n if n > 0 else out_len + n
        if 0 < real <= limit and real not in chosen:
            chosen[real] = 1.0 if weights is None else float(weights[idx])
    if not chosen:
        chosen = {limit: 1.0}
    ns = sorted(chosen)
    w = [1.0 / len(ns)] * len(ns) if weights is None else [chosen[n] for n in ns]
    return ns, w


def eisl_loss(
    logits: Tensor,
    target: Tensor,
    *,
    ngram: int | str | Sequence[int] = (1, 2),
    weights: Sequence[float] | None = None,
    ignore_index: int | None = -100,
    pad_mode: str = "exclude",
    output_mask: Tensor | None = None,
    gumbel: bool = True,
    tau: float = 1.0,
    clamp: float | None = -20.0,
    log_probs: bool = False,
    ce_factor: float = 0.0,
    ngram_factor: float = 1.0,
    label_smoothing: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    r"""Edit-invariant sequence loss (Liu et al., NAACL 2022).

    With :math:`M_{b,i,j} = \log p_\theta(y_{b,j} \mid \text{position } i)` (clamped at ``clamp``),
    every target n-gram ``j`` is matched against every output n-gram ``i``,
    :math:`G^n_{b,i,j} = \frac1n \sum_{k<n} M_{b,i+k,j+k}` (a convolution with an n×n identity
    kernel), softly aligned by :math:`W^n_{b,\cdot,j} = \mathrm{softmax}_i((G^n_{b,\cdot,j} +
    g)/\tau)`
    (Gumbel noise ``g`` unless ``gumbel=False``; the weights are not detached) and

    .. math::

        \mathcal L_{EISL} = -\frac1B\sum_b\sum_n \alpha_n\,
        \mathrm{mean}_j \sum_i W^n_{b,i,j} G^n_{b,i,j}.

    Args:
        logits (Tensor): decoder logits (B, T, V) (or log-probabilities with ``log_probs=True``).
        target (Tensor): target ids (B, T'), long; ``ignore_index`` marks padding.
        ngram (int | str | Sequence[int], optional): n-gram orders, e.g. ``"1,2"`` or ``(2, 3, 4)``;
            ``0`` = full output length, ``-1`` = length - 1 (see :func:`resolve_ngrams`). (default:
            (1, 2))
        weights (Sequence[float], optional): weight per spec entry. (default: uniform)
        ignore_index (int, optional): padding id in ``target``. (default: -100, as HF labels)
        pad_mode (str, optional): ``"exclude"``: target n-grams that touch padding are left out
            of the mean over target positions; every output position stays a candidate match
            (a right-padded label that lost its first tokens still aligns with the outputs
            where those tokens are); ``"zero"``: the official MT criterion's masking, log-prob 0
            at padded target columns. (default: ``"exclude"``)
        output_mask (Tensor, optional): (B, T) bool, valid output positions (e.g. the decoder's
            own padding); output windows touching an invalid position are left out of the
            alignment. (default: all valid)
        gumbel (bool, optional): Gumbel-softmax alignment as the official code; ``False`` gives the
            deterministic softmax variant. (default: True)
        tau (float, optional): softmax temperature. (default: 1.0)
        clamp (float, optional): lower clamp of the log-probabilities. (default: -20.0)
        log_probs (bool, optional): ``logits`` are already log-probabilities (checked: entries
            <= 0 and each row's logsumexp ~ 0). (default: False)
        ce_factor, ngram_factor (float, optional): ``loss = ngram_factor * eisl + ce_factor * ce``.
            (default: 0.0, 1.0)
        label_smoothing (float, optional): for the CE term (needs T == T'). (default: 0.0)
        generator (torch.Generator, optional): source of the Gumbel noise. (default: global RNG)

    Returns:
        dict with ``"loss"``, ``"eisl"``, ``"ce"`` (when ``ce_factor > 0``) and ``"eisl_<n>"``.
    """
    check_tensor("logits", logits, floating=True)
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (B, T, V), got {tuple(logits.shape)}")
    check_tensor("target", target, integer=True)
    if target.dim() != 2 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"target must have shape (B, T') with B={logits.shape[0]}, got {tuple(target.shape)}"
        )
    if pad_mode not in ("exclude", "zero"):
        raise ValueError(f"pad_mode must be 'exclude' or 'zero', got {pad_mode!r}")
    check_float("tau", tau, 0.0, lo_open=True)
    if clamp is not None:
        check_float("clamp", clamp, None, 0.0)
    check_float("ce_factor", ce_factor, 0.0)
    check_float("ngram_factor", ngram_factor, 0.0)
    check_float("label_smoothing", label_smoothing, 0.0, 1.0, hi_open=True)
    if ignore_index is not None:
        check_int("ignore_index", ignore_index)
    if log_probs:
        with torch.no_grad():
            lse = torch.logsumexp(logits.detach().double(), dim=-1)
            if bool((logits.detach() > 1e-4).any()) or bool((lse.abs() > 1e-3).any()):
                raise ValueError(
                    "log_probs=True but logits are not log-probabilities (positive entries or "
                    f"rows whose logsumexp is not 0; max |logsumexp| {float(lse.abs().max()):.3g})"
                    "; pass raw logits with log_probs=False"
                )
    B, T, V = logits.shape
    Tt = target.shape[1]
    pad = (
        target == ignore_index
        if ignore_index is not None
        else torch.zeros_like(target, dtype=torch.bool)
    )
    tgt = target.masked_fill(pad, 0).long()
    if ((tgt < 0) | (tgt >= V)).any():
        bad = tgt[(tgt < 0) | (tgt >= V)][0].item()
        raise ValueError(
            f"target id {bad} outside the vocabulary [0, {V}) (ignore_index={ignore_index})"
        )
    lp = logits if log_probs else F.log_softmax(logits, dim=-1)
    if clamp is not None:
        lp = torch.clamp(lp, min=clamp)
    M = lp.gather(2, tgt.unsqueeze(1).expand(B, T, Tt))  # (B, T, T')
    if pad_mode == "zero":
        M = M.masked_fill(pad.unsqueeze(1), 0.0)
    if output_mask is None:
        # never infer the output's validity from the target's padding: a target that lost its
        # first tokens must still match the outputs where those tokens are
        out_valid = torch.ones(B, T, dtype=torch.bool, device=logits.device)
    else:
        if not isinstance(output_mask, Tensor) or output_mask.shape != (B, T):
            raise ValueError(
                f"output_mask must be a tensor of shape {(B, T)}, got "
                f"{tuple(getattr(output_mask, 'shape', ()))}"
            )
        out_valid = output_mask.bool()
    tgt_valid = ~pad if pad_mode == "exclude" else torch.ones_like(pad)

    ns, ws = resolve_ngrams(ngram, T, Tt, weights)
    total = logits.new_zeros(())
    out: dict[str, Tensor] = {}
    for n, w in zip(ns, ws):
        To, Tg = T - n + 1, Tt - n + 1
        G = sum(M[:, k : k + To, k : k + Tg] for k in range(n)) / n  # (B, To, Tg)
        # a window is valid iff all its n positions are valid
        ov = out_valid.unfold(1, n, 1).all(-1)  # (B, To)
        tv = tgt_valid.unfold(1, n, 1).all(-1)  # (B, Tg)
        scores = G
        if gumbel:
            noise = -torch.empty_like(G).exponential_(generator=generator).log()
            scores = G + noise
        scores = scores.masked_fill(~ov.unsqueeze(-1), float("-inf")) / tau
        Wt = torch.softmax(scores, dim=1)
        Wt = torch.nan_to_num(Wt, nan=0.0)  # columns with no valid output window
        term = (Wt * G.masked_fill(~ov.unsqueeze(-1), 0.0)).sum(1)  # (B, Tg)
        cnt = tv.sum(1)
        per = (term * tv).sum(1) / cnt.clamp_min(1)
        has = (cnt > 0) & ov.any(1)
        s_n = per[has].sum() / max(int(has.sum()), 1) if pad_mode == "exclude" else per.sum() / B
        out[f"eisl_{n}"] = -s_n
        total = total + w * s_n
    eisl = -total
    out["eisl"] = eisl
    loss = ngram_factor * eisl
    if ce_factor:
        if T != Tt:
            raise ValueError(f"the CE term needs aligned lengths, got T={T} and T'={Tt}")
        ce = (
            F.nll_loss(
                (logits if log_probs else F.log_softmax(logits, -1)).reshape(B * T, V),
                target.reshape(-1).masked_fill(pad.reshape(-1), -100).long(),
                ignore_index=-100,
            )
            if label_smoothing == 0
            else F.cross_entropy(
                logits.reshape(B * T, V),
                target.reshape(-1).masked_fill(pad.reshape(-1), -100).long(),
                ignore_index=-100,
                label_smoothing=label_smoothing,
            )
        )
        out["ce"] = ce
        loss = loss + ce_factor * ce
    out["loss"] = loss
    return out


class EISLLoss(nn.Module):
    r"""Drop-in replacement for :class:`torch.nn.CrossEntropyLoss` on ``(B, T, V)`` logits:
    ``EISLLoss(ngram="1,2", ce_factor=0.5)(logits, labels)`` returns the scalar
    ``ngram_factor * EISL + ce_factor * CE`` (components in :attr:`last`).

    Args:
        ngram, weights, ignore_index, pad_mode, gumbel, tau, clamp, ce_factor, ngram_factor,
        label_smoothing: as :func:`eisl_loss`. (defaults: ``(1, 2)``, uniform, -100, ``"exclude"``,
        True, 1.0, -20.0, 0.0, 1.0, 0.0)

    Shapes:
        logits (B, T, V), target (B, T') -> scalar.
    """

    def __init__(
        self,
        *,
        ngram: int | str | Sequence[int] = (1, 2),
        weights: Sequence[float] | None = None,
        ignore_index: int | None = -100,
        pad_mode: str = "exclude",
        gumbel: bool = True,
        tau: float = 1.0,
        clamp: float | None = -20.0,
        ce_factor: float = 0.0,
        ngram_factor: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        _parse_spec(ngram)
        if pad_mode not in ("exclude", "zero"):
            raise ValueError(f"pad_mode must be 'exclude' or 'zero', got {pad_mode!r}")
        check_float("tau", tau, 0.0, lo_open=True)
        if clamp is not None:
            check_float("clamp", clamp, None, 0.0)
        check_float("ce_factor", ce_factor, 0.0)
        check_float("ngram_factor", ngram_factor, 0.0)
        check_float("label_smoothing", label_smoothing, 0.0, 1.0, hi_open=True)
        if ignore_index is not None:
            check_int("ignore_index", ignore_index)
        self.kw = dict(
            ngram=ngram,
            weights=weights,
            ignore_index=ignore_index,
            pad_mode=pad_mode,
            gumbel=gumbel,
            tau=tau,
            clamp=clamp,
            ce_factor=ce_factor,
            ngram_factor=ngram_factor,
            label_smoothing=label_smoothing,
        )
        self.last: dict[str, Tensor] = {}

    def forward(
        self, logits: Tensor, target: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        out = eisl_loss(logits, target, generator=generator, **self.kw)
        self.last = {k: v.detach() for k, v in out.items()}
        return out["loss"]

    def extra_repr(self) -> str:
        k = self.kw
        return (
            f"ngram={k['ngram']!r}, ce_factor={k['ce_factor']}, "
            f"ngram_factor={k['ngram_factor']}, gumbel={k['gumbel']}"
        )
