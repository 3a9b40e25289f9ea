"""Controllable multi-task architectures: a slimmable multi-task network, configuration-invariant
knowledge distillation (CIKD) and the constraint-to-width search.

Paper: Aich, Schulter, Roy-Chowdhury, Chandraker, Suh, *Efficient Controllable Multi-Task
Architectures*, ICCV 2023, arXiv:2308.11744. No official code was found (NEC Labs project page:
abstract only); nothing here is derived from code. This module is a **reconstruction** from the
abstract and the slimmable-network conventions (Yu et al., ICLR 2019; US-Nets, ICCV 2019).

Mechanism.

* :class:`SlimmableMTLNet`: a shared encoder and one decoder per task, built from slimmable
  layers (:mod:`invariance.vision.nn.slimmable`, switchable BatchNorm). A runtime configuration
  ``kappa = {"encoder": w_E, task: w_t, ...}`` with widths from ``W = (0.25, 0.5, 0.75, 1.0)``
  sets how many channels the encoder and every decoder use; output layers keep their size.
* Training (sandwich rule): every step runs the largest configuration, the smallest and ``n``
  random ones; loss = ``sum_kappa sum_t alpha_t L_t + beta * L_CIKD``.
* :func:`cikd_loss`: the encoder features of a slimmed configuration must match, on the channels
  they share, the *detached* features of the full encoder, stage by stage:
  ``sum_s ||F_s^kappa - sg(F_s^max)[:, :C_s(kappa)]||^2 / numel`` -- the shared representation
  becomes invariant to the runtime width configuration.
* :func:`search_widths`: from task preferences ``p`` (a point of the simplex) and a MAC budget,
  the configuration whose decoder widths follow the preference order (``p_i > p_j => w_i >=
  w_j``, equal preferences equal widths) that fits the budget and scores best on a validation
  callback (the preference-weighted task scores); encoder and decoder widths are searched
  jointly, so decoder width can be traded for encoder width. Without a callback a greedy rule
  (decoders from a monotone map of ``p / max p`` onto ``W``, then the widest encoder that fits,
  shrinking the least-preferred decoder when none fits). :func:`count_macs` counts
  multiply-accumulates with ``torch.utils.flop_counter.FlopCounterMode``.
* Metrics: :func:`controllability` (Kendall tau between requested preferences and achieved
  normalised task performances), :func:`hypervolume` of the achieved trade-offs, and
  :func:`delta_mtl` (Maninis et al.'s relative multi-task performance).

Tested properties (``tests/test_cikd.py``): a slimmable conv at width 1 equals ``nn.Conv2d``
and at width ``w`` equals a conv with the sliced weights (< 1e-6); CIKD is 0 for the full
configuration, >= 0, and sends no gradient into the teacher; the MAC count is monotone in every
width; the search respects the budget and is monotone in the preferences; with a validation score
it returns the best feasible preference-ordered configuration, never below decoder-only
control's choice; the full network's
outputs are equivariant to 2-D translations of the input by multiples of the encoder stride
(dense tasks; circular padding) with a negative control; after training, CIKD lowers the
relative feature error of slimmed configurations against sandwich training alone.

Deviations: the paper's exact loss placement, stage choice and search details are not published
as code (our choices above); CPU-sized encoder (4 conv stages, 16-32-64-64 channels) and
decoders (2 convs + head); data are procedural (:mod:`invariance.vision.data.digits_mtl`);
tasks are digit class, foreground segmentation and a depth-like distance map.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.vision._checks import check_tensor
from invariance.vision.nn.slimmable import SlimConv2d, SlimLinear, SwitchableBatchNorm2d

__all__ = [
    "WIDTHS",
    "SlimmableMTLNet",
    "cikd_loss",
    "count_macs",
    "search_widths",
    "kendall_tau",
    "controllability",
    "hypervolume",
    "delta_mtl",
]

WIDTHS = (0.25, 0.5, 0.75, 1.0)


def _check_width(w: object, name: str, widths: Sequence[float]) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        raise TypeError(f"{name} must be a width multiplier, got {type(w).__name__}")
    if float(w) not in widths:
        raise ValueError(f"{name} must be one of {tuple(widths)}, got {w!r}")
    return float(w)


class SlimmableMTLNet(nn.Module):
    """Slimmable shared encoder + one slimmable decoder per task.

    Args:
        tasks: ``{name: kind}`` with kind ``"cls"`` (10-way image classification), ``"seg"``
            (one-channel dense logits) or ``"reg"`` (one-channel dense regression)
            (default: ``{"cls": "cls", "seg": "seg", "depth": "reg"}``).
        channels: full encoder channels of the 4 stages (default: ``(16, 32, 64, 64)``; stages 2
            and 3 have stride 2).
        dec_channels: full decoder width (default: 32).
        widths: allowed width multipliers (default: :data:`WIDTHS`).
        num_classes: classes of ``"cls"`` tasks (default: 10).
        padding_mode: ``"zeros"`` or ``"circular"`` (the latter makes the dense outputs exactly
            translation-equivariant by multiples of 4 pixels).

    ``forward(x, config=None)`` returns ``(outputs, features)``: ``{task: tensor}`` (dense
    outputs at the input's resolution) and the 4 encoder stage features. ``config`` maps
    ``"encoder"`` and each task to a width (missing entries: 1.0).
    """

    def __init__(
        self,
        tasks: Mapping[str, str] | None = None,
        channels: Sequence[int] = (16, 32, 64, 64),
        dec_channels: int = 32,
        widths: Sequence[float] = WIDTHS,
        num_classes: int = 10,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        tasks = dict(tasks or {"cls": "cls", "seg": "seg", "depth": "reg"})
        if not tasks:
            raise ValueError("tasks must name at least one task")
        for t, kind in tasks.items():
            if kind not in ("cls", "seg", "reg") or t == "encoder":
                raise ValueError(f"tasks[{t!r}] must be 'cls', 'seg' or 'reg' (name not 'encoder')")
        if len(channels) != 4 or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"channels must be 4 positive ints, got {channels!r}")
        if not isinstance(dec_channels, int) or dec_channels < 1:
            raise ValueError(f"dec_channels must be a positive int, got {dec_channels!r}")
        ws = tuple(sorted(float(w) for w in widths))
        if not ws or ws[-1] != 1.0 or ws[0] <= 0:
            raise ValueError(f"widths must lie in (0, 1] and include 1.0, got {widths!r}")
        if padding_mode not in ("zeros", "circular"):
            raise ValueError(f"padding_mode must be 'zeros' or 'circular', got {padding_mode!r}")
        self.tasks, self.widths, self.channels = tasks, ws, tuple(channels)
        pm = padding_mode
        strides = (1, 2, 2, 1)
        ins = (3, *channels[:-1])
        self.enc = nn.ModuleList(
            SlimConv2d(i, o, 3, stride=s, padding=1, padding_mode=pm)
            for i, o, s in zip(ins, channels, strides)
        )
        self.enc_bn = nn.ModuleList(SwitchableBatchNorm2d(c, ws) for c in channels)
        self.dec = nn.ModuleDict()
        for t, kind in tasks.items():
            convs = nn.ModuleList(
                [
                    SlimConv2d(channels[-1], dec_channels, 3, padding=1, padding_mode=pm),
                    SlimConv2d(dec_channels, dec_channels, 3, padding=1, padding_mode=pm),
                ]
            )
            bns = nn.ModuleList(SwitchableBatchNorm2d(dec_channels, ws) for _ in range(2))
            if kind == "cls":
                head: nn.Module = SlimLinear(dec_channels, num_classes)
            else:
                head = SlimConv2d(dec_channels, 1, 1, fixed_out=True)
            self.dec[t] = nn.ModuleDict({"convs": convs, "bns": bns, "head": head})
        self.padding_mode = pm

    def full_config(self) -> dict[str, float]:
        return {"encoder": 1.0, **{t: 1.0 for t in self.tasks}}

    def min_config(self) -> dict[str, float]:
        return {"encoder": self.widths[0], **{t: self.widths[0] for t in self.tasks}}

    def check_config(self, config: Mapping[str, float] | None) -> dict[str, float]:
        """``config`` completed with 1.0 and validated against the widths and tasks."""
        cfg = self.full_config()
        if config is None:
            return cfg
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping of widths, got {type(config).__name__}")
        for k, w in config.items():
            if k not in cfg:
                raise ValueError(f"config has an unknown key {k!r}; keys: {sorted(cfg)}")
            cfg[k] = _check_width(w, f"config[{k!r}]", self.widths)
        return cfg

    def encode(self, x: Tensor, width: float = 1.0) -> list[Tensor]:
        feats = []
        for conv, bn in zip(self.enc, self.enc_bn):
            x = F.relu(bn(conv(x, width)))
            feats.append(x)
        return feats

    def forward(
        self, x: Tensor, config: Mapping[str, float] | None = None
    ) -> tuple[dict[str, Tensor], list[Tensor]]:
        check_tensor(x, "x", dims=4, expected="(n, 3, H, W)")
        if x.shape[1] != 3:
            raise ValueError(f"x must have 3 channels, got shape {tuple(x.shape)}")
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"x height and width must be multiples of 4, got {tuple(x.shape)}")
        cfg = self.check_config(config)
        feats = self.encode(x, cfg["encoder"])
        h0 = feats[-1]
        out = {}
        for t, kind in self.tasks.items():
            d = self.dec[t]
            h = h0
            for conv, bn in zip(d["convs"], d["bns"]):
                h = F.relu(bn(conv(h, cfg[t])))
            if kind == "cls":
                out[t] = d["head"](h.mean((2, 3)))
            else:
                y = d["head"](h)
                out[t] = F.interpolate(y, size=x.shape[-2:], mode="nearest")
        return out, feats


def cikd_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Configuration-invariant KD: ``sum_s mean((F_s - sg(T_s)[:, :C_s])^2)`` over stages.

    Args:
        student: the slimmed configuration's stage features, each (n, C_s, h, w).
        teacher: the full configuration's stage features (detached here), (n, C_s^max, h, w)
            with ``C_s^max >= C_s``.
    """
    if not isinstance(student, (list, tuple)) or not isinstance(teacher, (list, tuple)):
        raise TypeError("student and teacher must be lists of stage feature tensors")
    if len(student) != len(teacher) or not student:
        raise ValueError(
            f"student and teacher must have the same non-zero number of stages, got "
            f"{len(student)} and {len(teacher)}"
        )
    total = student[0].new_zeros(())
    for i, (s, t) in enumerate(zip(student, teacher)):
        check_tensor(s, f"student[{i}]", dims=4)
        check_tensor(t, f"teacher[{i}]", dims=4)
        if s.shape[1] > t.shape[1] or s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ValueError(
                f"student[{i}] {tuple(s.shape)} must be a channel prefix of teacher[{i}] "
                f"{tuple(t.shape)}"
            )
        total = total + (s - t.detach()[:, : s.shape[1]]).pow(2).mean()
    return total


def count_macs(model: SlimmableMTLNet, config: Mapping[str, float] | None, size: int) -> int:
    """Multiply-accumulates of one forward of a ``size`` x ``size`` image at ``config``,
    counted by ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    if not isinstance(model, SlimmableMTLNet):
        raise TypeError(f"model must be a SlimmableMTLNet, got {type(model).__name__}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 4 or size % 4:
        raise ValueError(f"size must be a positive multiple of 4, got {size!r}")
    cfg = model.check_config(config)
    was = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, size, size)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x, cfg)
    finally:
        model.train(was)
    return int(fc.get_total_flops() // 2)


def search_widths(
    macs: Callable[[dict[str, float]], float],
    budget: float,
    preferences: Mapping[str, float],
    widths: Sequence[float] = WIDTHS,
    *,
    score: Callable[[dict[str, float]], float] | None = None,
    encoder_widths: Sequence[float] | None = None,
) -> tuple[dict[str, float], bool]:
    """Constraint-to-width search. Returns ``(config, feasible)``.

    Args:
        macs: ``config -> MACs`` (e.g. ``lambda c: count_macs(model, c, 32)``).
        budget: MAC budget (> 0).
        preferences: ``{task: p_t}``, non-negative, not all zero (normalised here).
        widths: allowed widths (default: :data:`WIDTHS`).
        score: optional ``config -> validation performance`` (higher is better) used to pick the
            encoder width among the feasible ones; without it the widest feasible is taken.
        encoder_widths: encoder widths allowed (default: ``widths``; ``(1.0,)`` gives
            decoder-only control).

    Without ``score`` (greedy): decoder ``t`` gets ``widths[round((len(widths) - 1) * p_t /
    max p)]`` (monotone in ``p_t``); then the widest encoder width that fits the budget is
    taken; when none fits, the least-preferred decoder that can still shrink is shrunk by one
    step, and so on. With ``score`` (validated search): every configuration whose decoder
    widths respect the preference order (``p_s > p_t => w_s >= w_t``, equal preferences equal
    widths) and fits the budget is a candidate, and the best on ``score`` is returned, so the
    search can trade decoder width for encoder width (the greedy rule cannot; with
    ``encoder_widths=(1.0,)`` both reduce to decoder-only control). When nothing fits at all,
    the smallest configuration is returned with ``feasible=False``.
    """
    if not callable(macs):
        raise TypeError("macs must be a callable config -> MACs")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise ValueError(f"budget must be a positive number, got {budget!r}")
    if not math.isfinite(budget):
        raise ValueError(f"budget must be finite, got {budget}")
    if not isinstance(preferences, Mapping) or not preferences:
        raise ValueError("preferences must be a non-empty mapping {task: weight}")
    p = {}
    for t, v in preferences.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"preferences[{t!r}] must be a finite number >= 0, got {v!r}")
        p[t] = float(v)
    if max(p.values()) <= 0:
        raise ValueError("preferences must not be all zero")
    ws = sorted(float(w) for w in widths)
    enc_ws = sorted(float(w) for w in (encoder_widths or ws))
    top = max(p.values())
    if score is not None:
        if not callable(score):
            raise TypeError("score must be a callable config -> validation performance")
        cands = []
        tasks = list(p)
        for lv in itertools.product(range(len(ws)), repeat=len(tasks)):
            if any(
                (p[s] > p[t] and lv[i] < lv[j]) or (p[s] == p[t] and lv[i] != lv[j])
                for i, s in enumerate(tasks)
                for j, t in enumerate(tasks)
            ):
                continue
            dec = {t: ws[lv[i]] for i, t in enumerate(tasks)}
            cands += [{"encoder": we, **dec} for we in enc_ws]
        feasible = [c for c in cands if macs(c) <= budget]
        if feasible:
            return max(feasible, key=score), True
        return {"encoder": enc_ws[0], **{t: ws[0] for t in p}}, False
    level = {t: int(round((len(ws) - 1) * v / top)) for t, v in p.items()}
    order = sorted(p, key=lambda t: (p[t], t))  # least preferred first
    while True:
        dec = {t: ws[level[t]] for t in p}
        feasible = [
            {"encoder": we, **dec}
            for we in reversed(enc_ws)
            if macs({"encoder": we, **dec}) <= budget
        ]
        if feasible:
            if score is None:
                return feasible[0], True
            return max(feasible, key=score), True
        shrink = next((t for t in order if level[t] > 0), None)
        if shrink is None:
            return {"encoder": enc_ws[0], **dec}, False
        level[shrink] -= 1


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two sequences (ties handled as in ``scipy.stats.kendalltau``);
    0 when either sequence is constant."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a and b must have the same length >= 2, got {len(a)} and {len(b)}")
    conc = disc = ta = tb = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = a[i] - a[j], b[i] - b[j]
        if da == 0 and db == 0:
            continue
        if da == 0:
            ta += 1
        elif db == 0:
            tb += 1
        elif da * db > 0:
            conc += 1
        else:
            disc += 1
    den = math.sqrt((conc + disc + ta) * (conc + disc + tb))
    return 0.0 if den == 0 else (conc - disc) / den


def controllability(
    preferences: Sequence[Mapping[str, float]], performances: Sequence[Mapping[str, float]]
) -> float:
    """Mean over tasks of Kendall's tau between the requested preference of the task and its
    achieved (normalised, higher-is-better) performance, over the requested trade-offs."""
    if len(preferences) != len(performances) or len(preferences) < 2:
        raise ValueError("preferences and performances must be aligned lists of length >= 2")
    tasks = list(preferences[0])
    return sum(
        kendall_tau([p[t] for p in preferences], [q[t] for q in performances]) for t in tasks
    ) / len(tasks)


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Exact hypervolume dominated by ``points`` (maximisation) above ``reference``: the volume
    of the union of the boxes ``[reference, point]`` (coordinate compression; small sets)."""
    pts = [list(map(float, q)) for q in points]
    ref = list(map(float, reference))
    pts = [q for q in pts if len(q) == len(ref) and all(a > r for a, r in zip(q, ref))]
    if not pts:
        return 0.0
    d = len(ref)
    axes = [sorted({ref[k], *(q[k] for q in pts)}) for k in range(d)]
    vol = 0.0
    for cell in itertools.product(*(range(len(ax) - 1) for ax in axes)):
        hi = [axes[k][cell[k] + 1] for k in range(d)]
        if any(all(q[k] >= hi[k] for k in range(d)) for q in pts):
            vol += math.prod(axes[k][cell[k] + 1] - axes[k][cell[k]] for k in range(d))
    return vol


def delta_mtl(
    perf: Mapping[str, float], single: Mapping[str, float], lower_is_better: Sequence[str] = ()
) -> float:
    """``(1/T) sum_t (-1)^{l_t} (M_t - M_t^single) / M_t^single`` (in fractions, not %)."""
    if set(perf) != set(single) or not perf:
        raise ValueError("perf and single must have the same non-empty task keys")
    tot = 0.0
    for t in perf:
        if single[t] == 0:
            raise ValueError(f"single[{t!r}] must be non-zero")
        sign = -1.0 if t in lower_is_better else 1.0
        tot += sign * (perf[t] - single[t]) / single[t]
    return tot / len(perf)
