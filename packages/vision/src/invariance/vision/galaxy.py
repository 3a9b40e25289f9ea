"""Rotation-invariant convolutional neural networks for galaxy morphology prediction.

Paper: S. Dieleman, K. W. Willett, J. Dambre, "Rotation-invariant convolutional neural networks
for galaxy morphology prediction", MNRAS 450 (2015) 1441, arXiv:1503.07077 (winner of the Kaggle
Galaxy Challenge). Official code: https://github.com/benanne/kaggle-galaxies (Theano +
cuda-convnet, BSD-3-Clause, Copyright (c) 2014 Sander Dieleman); nothing was copied, the layers
were re-implemented from the paper and cross-read against ``layers.py`` and ``custom.py``.

Mechanism. Each image gives two representations (as is, and rotated by 45 degrees), each with its
mirror image; each of those 4 views is cut into its 4 overlapping corner parts, rotated so that
the galaxy centre sits in the same corner
(:func:`~invariance.vision.nn.galaxy_layers.galaxy_views`).
All 16 parts go through ONE shared conv stack (valid convs 6-5-3-3 with untied biases, max-pools);
their features are concatenated (official) and fed to two maxout dense layers and a 37-output
layer whose answers are normalised per question and rescaled down the Galaxy Zoo decision tree
(:class:`~invariance.vision.nn.galaxy_layers.GalaxyZooOutput`). The dihedral group D4 of the
square permutes the 16 parts exactly, so the part features are D4-equivariant (block
permutation); with ``merge="mean"`` (cyclic pooling, Dieleman et al. 2016) the prediction is
exactly D4-invariant. Loss: MSE on the 37 vote fractions (metric: RMSE).

Tested properties (packages/vision/tests/test_galaxy.py):
    * ``test_galaxy_parts_permute_under_d4``: parts(g x) is a permutation of parts(x), error 0.
    * ``test_galaxy_concat_features_equivariant``: part features permute as blocks.
    * ``test_galaxy_mean_merge_invariant_d4``: merge="mean" prediction invariant to the 8
      symmetries of the square (core ``assert_invariant``), negative control: merge="concat"
      and the plain CNN are not.
    * ``test_galaxy_output_obeys_decision_tree`` and the generator's votes obey the same tree.
    * ``test_galaxy_views_golden`` / ``test_galaxy_output_golden``: golden values from a numpy
      restatement of the official formulas (``golden_galaxy.json``).
    * ``test_galaxy_no_flip_mean_merge_is_c4_not_mirror_invariant``: ``include_flip=False``
      gives rot90 invariance only (mirror negative control).
    * ``test_galaxy_learns_rotated_test_set``: beats the plain CNN on a rotated test set.

Deviations. Data are procedural (Kaggle GZ2 needs a login); images are rendered at 69 px so
the official 424 -> 207 -> 69 crop/downsample becomes ``crop=1``. Width multiplier and dense size
are configurable (the full model has 33 M dense parameters). The recipe trains with the config's
optimizer (AdamW without weight decay by default) and Kaiming init for CPU-sized budgets
(``init="official"`` restores N(0, 0.01)/bias 0.1); the first ``warmup_steps`` use the
un-normalised clipped output, as in the official first chunk. The 45 degree representation is
interpolated, so only D4 (not D8) is exact. With the ReLU output layer, tiny CPU runs sometimes
fall into the all-zero dead state of a question group (observed for seed 1 of the tiny mean-merge
run); ``output_activation="softplus"`` selects the official alternative
``SoftplusDivGalaxyOutputLayer`` that has no such state.

Augmentation and test-time averaging differ from the official pipeline. The official training
augmentation draws, per image, a rotation U(0, 360) degrees, a translation U(-4, 4) px (in the
424 px frame), a log-uniform zoom in [1/1.3, 1.3] and a mirror flip with probability 1/2; the
official predictions average 60 transformed copies of each test image (10 rotations 36 degrees
apart x 3 zooms 1/1.2, 1, 1.2 x mirror). The recipe's ``augment=True`` draws only the rotation
(uniform angle, bilinear, kornia) and the mirror flip (p = 1/2), seeded by the run's seed and the
step; there is no translation, zoom or colour perturbation (the procedural galaxies are centred
and of known scale), and evaluation uses one forward pass per image (no test-time averaging).
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor, nn

from invariance.vision._checks import check_int, check_number, check_tensor
from invariance.vision.nn.galaxy_layers import (
    GalaxyZooOutput,
    Maxout,
    UntiedConv2d,
    galaxy_views,
    merge_views,
)

__all__ = ["GalaxyNet", "PlainGalaxyCNN", "GalaxyZooOutput", "galaxy_loss"]


def _check_images(x: Tensor, channels: int, who: str) -> None:
    check_tensor(x, "x", dims=4, expected=f"({who} input (B, {channels}, S, S))")
    if x.shape[1] != channels or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{who} expects x of shape (B, {channels}, S, S), got {tuple(x.shape)}")


def _conv_stack(
    in_channels: int, in_size: int, width: float, untied: bool, init: str
) -> tuple[nn.Sequential, int, int]:
    """Official conv stack (6x6/32, pool, 5x5/64, pool, 3x3/128, 3x3/128, pool); returns
    (stack, out_channels, out_size)."""
    chans = [max(1, round(c * width)) for c in (32, 64, 128, 128)]
    layers: list[nn.Module] = []
    size, cin = in_size, in_channels
    for k, cout, pool in zip((6, 5, 3, 3), chans, (True, True, False, True)):
        if size < k:
            raise ValueError(
                f"input of side {in_size} is too small for the conv stack "
                f"(side {size} before the {k}x{k} conv)"
            )
        if untied:
            conv = UntiedConv2d(in_channels=cin, out_channels=cout, kernel_size=k, in_size=size)
        else:
            conv = nn.Conv2d(cin, cout, k)
        layers += [conv, nn.ReLU()]
        size = size - k + 1
        if pool:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        if size < 1:
            raise ValueError(f"input of side {in_size} is too small for the conv stack")
        cin = cout
    stack = nn.Sequential(*layers)
    _init_convs(stack, init)
    return stack, cin, size


def _init_convs(stack: nn.Sequential, init: str) -> None:
    """Official init N(0, 0.01) (last conv 0.1), bias 0.1; or Kaiming with zero bias."""
    convs = [m for m in stack if isinstance(m, (nn.Conv2d, UntiedConv2d))]
    for i, conv in enumerate(convs):
        if init == "kaiming":
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.constant_(conv.bias, 0.0)
        else:
            nn.init.normal_(conv.weight, std=0.1 if i == len(convs) - 1 else 0.01)
            nn.init.constant_(conv.bias, 0.1)


def _dense_head(in_features: int, hidden: int, dropout: float, init: str) -> nn.Sequential:
    """Dropout -> Linear -> maxout(2) -> Dropout -> Linear -> maxout(2) -> Dropout -> Linear(37)."""
    head = nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, 2 * hidden),
        Maxout(pool=2),
        nn.Dropout(dropout),
        nn.Linear(hidden, 2 * hidden),
        Maxout(pool=2),
        nn.Dropout(dropout),
        nn.Linear(hidden, 37),
    )
    _init_head(head, init)
    return head


def _init_head(head: nn.Sequential, init: str) -> None:
    """Official init: hidden N(0, 0.001) bias 0.01, output N(0, 0.01) bias 0.1; or Kaiming."""
    for i, m in enumerate(x for x in head if isinstance(x, nn.Linear)):
        if init == "official":
            nn.init.normal_(m.weight, std=0.01 if i == 2 else 0.001)
            nn.init.constant_(m.bias, 0.1 if i == 2 else 0.01)
        else:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu" if i < 2 else "linear")
            nn.init.constant_(m.bias, 0.1 if i == 2 else 0.0)


class GalaxyNet(nn.Module):
    r"""Rotation-invariant galaxy CNN of Dieleman et al. (2015), `arXiv:1503.07077
    <https://arxiv.org/abs/1503.07077>`_.

    Args:
        in_channels (int): image channels (default: 3).
        view_size (int): side of each representation (default: 69).
        part_size (int): side of the corner parts (default: 45).
        crop (float): fraction of the input side mapped onto a view (default: 1.0).
        width (float): multiplier of the conv widths 32/64/128/128 (default: 1.0).
        hidden (int): maxout units per dense layer (default: 2048).
        merge (str): ``"concat"`` (official) or ``"mean"`` (exactly D4-invariant) (default:
            ``"concat"``).
        include_45 (bool): use the 45-degree representation (default: True).
        include_flip (bool): use mirrored views (default: True).
        untied_biases (bool): one conv bias per position, as cuda-convnet (default: True).
        dropout (float): dropout before each dense layer (default: 0.5).
        init (str): ``"official"`` (N(0, 0.01), biases 0.1) or ``"kaiming"`` (default:
            ``"official"``).
        output_activation (str): ``"relu"`` (official) or ``"softplus"`` (the official
            alternative output layer) (default: ``"relu"``).

    Shapes:
        input (B, C, S, S) in [0, 1] -> output (B, 37) vote fractions.

    Invariance:
        with ``merge="mean"`` and ``include_flip=True`` the output is invariant to the 8
        symmetries of the square (rot90^k, mirror) of the input; with ``merge="mean"`` and
        ``include_flip=False`` only to the 4 rotations rot90^k (not to mirroring); with
        ``"concat"`` the part features are equivariant (block permutation) but the prediction
        is not invariant.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        view_size: int = 69,
        part_size: int = 45,
        crop: float = 1.0,
        width: float = 1.0,
        hidden: int = 2048,
        merge: str = "concat",
        include_45: bool = True,
        include_flip: bool = True,
        untied_biases: bool = True,
        dropout: float = 0.5,
        init: str = "official",
        output_activation: str = "relu",
    ) -> None:
        super().__init__()
        if merge not in ("concat", "mean"):
            raise ValueError(f"merge must be 'concat' or 'mean', got {merge!r}")
        if init not in ("official", "kaiming"):
            raise ValueError(f"init must be 'official' or 'kaiming', got {init!r}")
        check_int(in_channels, "in_channels")
        check_int(view_size, "view_size")
        check_int(part_size, "part_size")
        check_number(crop, "crop", lo=0.0, lo_open=True)
        check_number(width, "width", lo=0.0, lo_open=True)
        check_int(hidden, "hidden")
        check_number(dropout, "dropout", lo=0.0, hi=1.0)
        if part_size > view_size:
            raise ValueError(f"part_size ({part_size}) must be <= view_size ({view_size})")
        self.in_channels, self.view_size, self.part_size, self.crop = (
            in_channels,
            view_size,
            part_size,
            crop,
        )
        self.width, self.hidden, self.merge, self.dropout, self.init = (
            width,
            hidden,
            merge,
            dropout,
            init,
        )
        self.include_45, self.include_flip, self.untied_biases = (
            include_45,
            include_flip,
            untied_biases,
        )
        self.n_views = 4 * (2 if include_45 else 1) * (2 if include_flip else 1)
        self.convs, c, s = _conv_stack(in_channels, part_size, width, untied_biases, init)
        self.part_features_dim = c * s * s
        in_feats = self.part_features_dim * (self.n_views if merge == "concat" else 1)
        self.head = _dense_head(in_feats, hidden, dropout, init)
        self.output = GalaxyZooOutput(activation=output_activation)

    def reset_parameters(self) -> None:
        _init_convs(self.convs, self.init)
        _init_head(self.head, self.init)

    def _check(self, x: Tensor) -> None:
        _check_images(x, self.in_channels, "GalaxyNet")

    def part_features(self, x: Tensor) -> Tensor:
        """(B, C, S, S) -> (V * B, F) features of every part (part-major)."""
        self._check(x)
        parts = galaxy_views(
            x,
            view_size=self.view_size,
            part_size=self.part_size,
            crop=self.crop,
            include_45=self.include_45,
            include_flip=self.include_flip,
        )
        return self.convs(parts).flatten(1)

    def features(self, x: Tensor) -> Tensor:
        """Merged features, (B, V * F) for concat or (B, F) for mean."""
        return merge_views(self.part_features(x), self.n_views, self.merge)

    def forward(self, x: Tensor, normalise: bool = True) -> Tensor:
        return self.output(self.head(self.features(x)), normalise=normalise)

    def extra_repr(self) -> str:
        return (
            f"views={self.n_views}, view_size={self.view_size}, part_size={self.part_size}, "
            f"width={self.width}, hidden={self.hidden}, merge={self.merge!r}"
        )


class PlainGalaxyCNN(nn.Module):
    """Baseline: the same conv stack applied once to the whole (resampled) view, same dense head
    and decision-tree output (no view slicing, no symmetry). Same args as :class:`GalaxyNet`.

    Shapes: (B, C, S, S) -> (B, 37).  Invariance: none (negative control).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        view_size: int = 69,
        width: float = 1.0,
        hidden: int = 2048,
        untied_biases: bool = True,
        dropout: float = 0.5,
        init: str = "official",
        output_activation: str = "relu",
    ) -> None:
        super().__init__()
        self.in_channels, self.view_size, self.init = in_channels, view_size, init
        self.convs, c, s = _conv_stack(in_channels, view_size, width, untied_biases, init)
        self.head = _dense_head(c * s * s, hidden, dropout, init)
        self.output = GalaxyZooOutput(activation=output_activation)

    def reset_parameters(self) -> None:
        _init_convs(self.convs, self.init)
        _init_head(self.head, self.init)

    def forward(self, x: Tensor, normalise: bool = True) -> Tensor:
        _check_images(x, self.in_channels, "PlainGalaxyCNN")
        if x.shape[-1] != self.view_size:
            x = torch.nn.functional.interpolate(
                x, size=(self.view_size,) * 2, mode="bilinear", align_corners=True
            )
        return self.output(self.head(self.convs(x).flatten(1)), normalise=normalise)


def galaxy_loss(pred: Tensor, votes: Tensor) -> dict[str, Tensor]:
    """MSE on the 37 vote fractions; returns ``loss`` (MSE) and ``rmse``."""
    check_tensor(pred, "pred", dims=2, expected="(B, 37)")
    check_tensor(votes, "votes", dims=2, expected="(B, 37)")
    if pred.shape != votes.shape or pred.shape[-1] != 37:
        raise ValueError(
            f"pred and votes must both be (B, 37), got {tuple(pred.shape)} and {tuple(votes.shape)}"
        )
    mse = torch.mean((pred - votes) ** 2)
    return {"loss": mse, "rmse": mse.detach().sqrt()}


_MOVED = ("GalaxyConfig", "GalaxyMeanConfig", "GalaxyRecipe", "GalaxyNetRecipe", "GalaxyMeanRecipe")


def __getattr__(name: str) -> object:
    """Recipe names that moved to :mod:`invariance.vision.recipes.galaxy` stay importable here."""
    if name in _MOVED:
        return getattr(importlib.import_module("invariance.vision.recipes.galaxy"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
