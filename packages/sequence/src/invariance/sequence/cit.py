"""CIT: corpus-invariant tuning of a retrieval-augmented reader.

Paper: Zhang, Gangi Reddy, Small, Zhang, Ji, "Towards Better Generalization in Open-Domain
Question Answering by Mitigating Context Memorization", NAACL 2024 Findings, arXiv 2404.01652.
Official code: none public (searched); this module follows the paper's description.

Mechanism. A Fusion-in-Decoder (FiD) reader answers a question from ``k`` retrieved passages:
each ``"question: q context: p_i"`` is encoded separately by a T5 encoder, the encoder states are
concatenated and the decoder generates the answer. Fine-tuning on QA makes the reader memorise
the knowledge of its training corpus, so when the corpus is updated or swapped it keeps answering
from memory. CIT adds to the QA loss a term that keeps the reader's likelihood of the retrieved
passages from increasing during tuning:

    L = L_QA + lam * L_CIT,   L_CIT = mean_d max(0, L_MSP(theta_0; d) - L_MSP(theta; d))

where ``L_MSP(theta; d)`` is the masked-span-prediction loss of passage ``d`` (T5 span
corruption: sentinel-masked spans, the reader generates them) and ``theta_0`` the reader before
tuning (``form="initial"``, the cached per-passage value), or ``max(0, tau - L_MSP(theta; d))``
(``form="threshold"``). Passages are the top-``k`` retrieved for the training question.

Tested properties: ``L_CIT >= 0``, zero at initialisation (``form="initial"``) with zero gradient
while the constraint is inactive, exact hinge values and gradients once the passage likelihood
rises; span corruption reconstructs the passage exactly; FiD's fused encoder states are
equivariant to permuting the retrieved passages, a reader over their concatenation is not
(negative control); learning test: plain tuning raises the reader's likelihood of its training
passages, CIT keeps it at its pre-tuning value, ``lam = 0`` is plain tuning
(``tests/test_cit.py``). The paper's headline (higher EM on updated / new corpora, lower
closed-book accuracy) is what ``reproduce cit`` measures on the synthetic analog; it did not show
there in the settings tried (see the package README).

Deviations: the exact form of L_CIT is not published in code; both hinge forms above are offered
(the unbounded ``-L_MSP`` is not, as unstable). Atlas (Contriever + FiD T5-base, Wikipedia) is
replaced by a tiny T5 built from a config, pre-trained here with span corruption on a disjoint
synthetic corpus, an oracle retriever (gold passage + distractors) and the synthetic versioned
knowledge base of :mod:`invariance.sequence.text.facts`; EM is exact string match of the greedy
answer. The recipe's default passage likelihood is salient-span MSP (the fact's value is the masked
span; ``masking="random"`` = T5 span corruption) and both arms keep span-corruption training on
the disjoint corpus during tuning (``anchor``): without it QA tuning destroys the tiny reader's
span filling (MSP loss 1.3 -> 6.4) and the hinge never activates.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "FiDReader",
    "span_corrupt",
    "cit_penalty",
    "CorpusInvariantTuning",
    "exact_match",
]


def _ids(x: Any, name: str, dims: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dtype != torch.long:
        raise TypeError(f"{name} must hold token ids (torch.long), got {x.dtype}")
    if x.dim() != dims or x.numel() == 0:
        raise ValueError(f"{name} must be a non-empty {dims}-D tensor, got {tuple(x.shape)}")
    return x


class FiDReader(nn.Module):
    """Fusion-in-Decoder around a ``transformers`` ``T5ForConditionalGeneration``."""

    def __init__(self, t5: nn.Module) -> None:
        super().__init__()
        if not hasattr(t5, "get_encoder") or not hasattr(t5, "config"):
            raise TypeError(
                "t5 must be a transformers encoder-decoder (T5ForConditionalGeneration)"
            )
        self.t5 = t5

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, K, L)`` ids and mask -> fused encoder states ``(B, K*L, d)`` and mask."""
        _ids(input_ids, "input_ids", 3)
        if not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape:
            raise ValueError("attention_mask must be a tensor shaped like input_ids")
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= self.t5.config.vocab_size:
            raise ValueError(f"input_ids must lie in [0, {self.t5.config.vocab_size})")
        B, K, L = input_ids.shape
        h = self.t5.get_encoder()(
            input_ids=input_ids.reshape(B * K, L), attention_mask=attention_mask.reshape(B * K, L)
        ).last_hidden_state
        return h.reshape(B, K * L, -1), attention_mask.reshape(B, K * L)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Tensor:
        """Mean token cross-entropy of ``labels`` ``(B, T)`` (``-100`` = ignored)."""
        from transformers.modeling_outputs import BaseModelOutput

        _ids(labels, "labels", 2)
        h, m = self.encode(input_ids, attention_mask)
        out = self.t5(
            encoder_outputs=BaseModelOutput(last_hidden_state=h), attention_mask=m, labels=labels
        )
        return out.loss

    @torch.no_grad()
    def generate(self, input_ids: Tensor, attention_mask: Tensor, max_len: int = 4) -> Tensor:
        """Greedy answers ``(B, <= max_len)`` (decoder start = pad, stops at eos)."""
        from transformers.modeling_outputs import BaseModelOutput

        h, m = self.encode(input_ids, attention_mask)
        enc = BaseModelOutput(last_hidden_state=h)
        cfg = self.t5.config
        y = torch.full((h.shape[0], 1), cfg.decoder_start_token_id, dtype=torch.long)
        done = torch.zeros(h.shape[0], dtype=torch.bool)
        for _ in range(max_len):
            logits = self.t5(encoder_outputs=enc, attention_mask=m, decoder_input_ids=y).logits
            nxt = logits[:, -1].argmax(-1).masked_fill(done, cfg.pad_token_id)
            y = torch.cat([y, nxt[:, None]], 1)
            done |= nxt == cfg.eos_token_id
            if bool(done.all()):
                break
        return y[:, 1:]

    def msp_loss(self, input_ids: Tensor, labels: Tensor) -> Tensor:
        """Per-passage masked-span-prediction loss: corrupted passages ``(P, L)`` (pad = 0 is
        masked out), sentinel targets ``(P, T)`` (``-100`` ignored) -> ``(P,)`` mean token CE."""
        _ids(input_ids, "input_ids", 2)
        _ids(labels, "labels", 2)
        if labels.shape[0] != input_ids.shape[0]:
            raise ValueError("labels must have one row per passage in input_ids")
        mask = (input_ids != self.t5.config.pad_token_id).long()
        logits = self.t5(input_ids=input_ids, attention_mask=mask, labels=labels).logits
        ce = nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
        valid = (labels != -100).float()
        return (ce * valid).sum(1) / valid.sum(1).clamp_min(1.0)


def span_corrupt(
    ids: Sequence[int],
    sentinels: Sequence[int],
    eos: int,
    *,
    noise_density: float = 0.3,
    mean_span: float = 2.0,
    seed: int = 0,
) -> tuple[list[int], list[int]]:
    """T5 span corruption of one passage: ``round(noise_density * n)`` tokens (at least 1) in
    spans of mean length ``mean_span`` are replaced by sentinels; returns ``(input, target)``,
    ``target = <s0> span0 <s1> span1 ... eos``. ``ids`` excludes the eos."""
    ids = list(ids)
    if not ids:
        raise ValueError("ids is empty")
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density!r}")
    if mean_span < 1:
        raise ValueError(f"mean_span must be >= 1, got {mean_span!r}")
    rng = random.Random(seed)
    n = len(ids)
    n_noise = min(n - 1, max(1, round(noise_density * n))) if n > 1 else 1
    n_spans = max(1, min(len(sentinels), round(n_noise / mean_span), n - n_noise + 1))
    # random split of n_noise into n_spans positive lengths, same for the kept tokens
    cuts = sorted(rng.sample(range(1, n_noise), n_spans - 1)) if n_spans > 1 else []
    noise = [b - a for a, b in zip([0, *cuts], [*cuts, n_noise])]
    n_keep = n - n_noise
    gaps = [0] * (n_spans + 1)
    for _ in range(n_keep):
        gaps[rng.randrange(n_spans + 1)] += 1
    inp: list[int] = []
    tgt: list[int] = []
    pos = 0
    for s in range(n_spans):
        inp += ids[pos : pos + gaps[s]]
        pos += gaps[s]
        inp.append(sentinels[s])
        tgt += [sentinels[s], *ids[pos : pos + noise[s]]]
        pos += noise[s]
    inp += ids[pos:]
    return inp + [eos], tgt + [eos]


def cit_penalty(
    current: Tensor, initial: Tensor | None = None, *, form: str = "initial", tau: float = 0.0
) -> Tensor:
    """``mean(max(0, ref - current))`` with ``ref = initial`` (``form="initial"``) or ``tau``
    (``form="threshold"``); ``current`` is the per-passage MSP loss ``(P,)``."""
    if not isinstance(current, Tensor) or current.dim() != 1 or current.numel() == 0:
        raise ValueError("current must be a non-empty 1-D tensor of per-passage MSP losses")
    if not current.dtype.is_floating_point:
        raise TypeError(f"current must be floating point, got {current.dtype}")
    if not torch.isfinite(current).all():
        raise ValueError("current holds NaN or inf")
    if form == "initial":
        if not isinstance(initial, Tensor) or initial.shape != current.shape:
            raise ValueError("initial must be a tensor shaped like current for form='initial'")
        if not initial.dtype.is_floating_point:
            raise TypeError(f"initial must be floating point, got {initial.dtype}")
        if not torch.isfinite(initial).all():
            raise ValueError("initial holds NaN or inf")
        ref = initial.to(current)
    elif form == "threshold":
        if not isinstance(tau, (int, float)) or not (tau == tau) or abs(tau) == float("inf"):
            raise ValueError(f"tau must be a finite number, got {tau!r}")
        ref = torch.full_like(current, float(tau))
    else:
        raise ValueError(f"form must be 'initial' or 'threshold', got {form!r}")
    return torch.relu(ref - current).mean()


class CorpusInvariantTuning(nn.Module):
    """The CIT objective around a :class:`FiDReader`: ``loss = L_QA + lam * L_CIT``.

    Args:
        reader: the FiD reader being tuned.
        lam: weight of the CIT term (``0`` = plain tuning).
        form: ``"initial"`` (hinge to each passage's MSP loss before tuning, cached by
            :meth:`cache_initial`) or ``"threshold"`` (hinge to ``tau``).
        tau: the threshold of ``form="threshold"``.
        n_passages: number of passages in the corpus (size of the cached buffer).
    """

    def __init__(
        self,
        reader: FiDReader,
        *,
        lam: float = 1.0,
        form: str = "initial",
        tau: float = 0.0,
        n_passages: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(reader, FiDReader):
            raise TypeError(f"reader must be a FiDReader, got {type(reader).__name__}")
        if not isinstance(lam, (int, float)) or not lam >= 0 or lam == float("inf"):
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
        if form not in ("initial", "threshold"):
            raise ValueError(f"form must be 'initial' or 'threshold', got {form!r}")
        if isinstance(n_passages, bool) or not isinstance(n_passages, int) or n_passages < 1:
            raise ValueError(f"n_passages must be a positive int, got {n_passages!r}")
        self.reader, self.lam, self.form, self.tau = reader, float(lam), form, float(tau)
        self.register_buffer("initial_msp", torch.zeros(n_passages))

    @torch.no_grad()
    def cache_initial(self, msp_inputs: Tensor, msp_labels: Tensor, batch_size: int = 64) -> None:
        """Store ``L_MSP(theta_0; d)`` of every corpus passage (rows of the corruption tensors)."""
        was = self.reader.training
        self.reader.eval()
        vals = [
            self.reader.msp_loss(msp_inputs[i : i + batch_size], msp_labels[i : i + batch_size])
            for i in range(0, msp_inputs.shape[0], batch_size)
        ]
        self.initial_msp = torch.cat(vals).to(self.initial_msp)
        self.reader.train(was)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor,
        passage_ids: Tensor | None = None,
        msp_inputs: Tensor | None = None,
        msp_labels: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """QA batch (FiD ``(B, K, L)`` inputs, answer labels) and the corruptions of its retrieved
        passages (``passage_ids`` ``(P,)`` index the cache; ``msp_*`` ``(P, .)``)."""
        qa = self.reader(input_ids, attention_mask, labels)
        if self.lam == 0.0 or passage_ids is None:
            return {"loss": qa, "qa": qa.detach(), "cit": torch.zeros(())}
        _ids(passage_ids, "passage_ids", 1)
        cur = self.reader.msp_loss(msp_inputs, msp_labels)
        ref = self.initial_msp[passage_ids] if self.form == "initial" else None
        cit = cit_penalty(cur, ref, form=self.form, tau=self.tau)
        return {
            "loss": qa + self.lam * cit,
            "qa": qa.detach(),
            "cit": cit.detach(),
            "msp": cur.mean().detach(),
        }


def exact_match(pred: Sequence[str], gold: Sequence[str]) -> float:
    """Fraction of predictions equal to the gold answer after lower-casing and stripping."""
    if len(pred) != len(gold) or not pred:
        raise ValueError(
            f"pred and gold need the same non-zero length, got {len(pred)}, {len(gold)}"
        )
    return sum(p.strip().lower() == g.strip().lower() for p, g in zip(pred, gold)) / len(pred)
