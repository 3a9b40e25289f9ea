"""LisGAN benches (``invariance-vision bench lisgan_step|lisgan_cascade``), registered on import
by :mod:`invariance.vision.bench`.

With ``LISGAN_OFFICIAL_REPO`` naming a local checkout of https://github.com/lijin118/LisGAN (no
licence file; commit 4484acb0 was used), the official code is executed from that checkout, never
copied here: its training-step loop body and helper functions out of ``lisgan.py`` (via ``ast``,
the script cannot be imported), its ``model.py`` networks, ``util.DATA_LOADER.next_batch`` and
``classifier2.CLASSIFIER``. Without it, each bench falls back to a stated reference of ours (the
f-CLSWGAN step; the stage-1 classifier alone).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

import torch

from invariance.core.bench import compare, machine, register_bench

__all__ = ["bench_lisgan_step", "bench_lisgan_cascade"]


def _repeats(quick: bool) -> dict:
    return {"repeats": 3, "min_run_time": 0.1} if quick else {"repeats": 7, "min_run_time": 0.3}


def _lisgan_repo() -> Path | None:
    """A local checkout of https://github.com/lijin118/LisGAN, from ``LISGAN_OFFICIAL_REPO``."""
    p = os.environ.get("LISGAN_OFFICIAL_REPO", "")
    need = ("model.py", "lisgan.py", "util.py", "classifier2.py")
    return Path(p) if p and all((Path(p) / f).exists() for f in need) else None


def _load_official(repo: Path, name: str):
    """Import ``<repo>/<name>.py`` under a private module name. The official modules import
    each other as top-level ``util``; that name is bound in ``sys.modules`` only while loading
    (and restored after), and ``termcolor`` (imported by ``classifier2``, used only in comments)
    gets an empty stand-in when it is not installed."""
    import sys
    import types

    saved = {k: sys.modules.get(k) for k in ("util", "termcolor")}
    try:
        if name != "util":
            sys.modules["util"] = _load_official(repo, "util")
        if importlib.util.find_spec("termcolor") is None:
            sys.modules["termcolor"] = types.SimpleNamespace(cprint=print)
        spec = importlib.util.spec_from_file_location(
            f"lisgan_official_{name}", repo / f"{name}.py"
        )
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _official_lisgan_step(repo: Path, d: dict, souls: torch.Tensor, cfg, device: str):
    """One official LisGAN training step, run from ``lisgan.py`` itself: the body of its inner
    training loop (``critic_iter`` critic updates with the gradient penalty, then the generator
    update with the classification loss and both soul-sample losses) and the helper functions it
    calls are taken out of the script with ``ast`` and executed (the script parses arguments
    and loads data at import, so it cannot be imported); the networks are the official
    ``model.MLP_G`` / ``model.MLP_CRITIC``, batches come from the official
    ``DATA_LOADER.next_batch``. Two shims for PyTorch 2: ``one``/``mone`` are 0-dim (the 0.3-era
    ``.mean()`` returned a 1-element tensor), and ``x.cuda()`` calls are rewritten to
    ``x.to(device)`` so the step also runs on CPU."""
    import ast
    import types

    from torch import autograd, nn
    from torch.autograd import Variable

    src = (repo / "lisgan.py").read_text()
    tree = ast.parse(src)

    class _ToDevice(ast.NodeTransformer):
        def visit_Call(self, node):
            self.generic_visit(node)
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr == "cuda" and not node.args:
                return ast.Call(
                    ast.Attribute(f.value, "to", ast.Load()), [ast.Name("_device", ast.Load())], []
                )
            return node

    funcs = [
        n
        for n in tree.body
        if isinstance(n, ast.FunctionDef)
        and n.name
        in (
            "sample",
            "generate_syn_feature_with_grad",
            "map_label",
            "pairwise_distances",
            "calc_gradient_penalty",
        )
    ]
    epoch_loop = next(
        n for n in tree.body if isinstance(n, ast.For) and getattr(n.target, "id", "") == "epoch"
    )
    inner = next(n for n in epoch_loop.body if isinstance(n, ast.For))
    body = ast.fix_missing_locations(
        _ToDevice().visit(ast.Module(body=inner.body, type_ignores=[]))
    )
    defs = ast.fix_missing_locations(_ToDevice().visit(ast.Module(body=funcs, type_ignores=[])))
    model = _load_official(repo, "model")
    util = _load_official(repo, "util")
    c2 = _load_official(repo, "classifier2")
    opt = types.SimpleNamespace(
        batch_size=cfg.batch_size,
        resSize=cfg.feat_dim,
        attSize=cfg.n_attributes,
        nz=cfg.n_attributes,
        ngh=cfg.hidden,
        ndh=cfg.hidden,
        critic_iter=cfg.critic_iter,
        lambda1=cfg.lam_gp,
        cls_weight=cfg.cls_weight,
        proto_param1=cfg.proto_param1,
        proto_param2=cfg.proto_param2,
        loss_syn_num=cfg.loss_syn_num,
        n_clusters=cfg.n_clusters,
        cuda=torch.device(device).type == "cuda",
    )
    data = util.DATA_LOADER.__new__(util.DATA_LOADER)
    data.train_feature, data.train_label = d["train_x"], d["train_y"]
    data.attribute, data.seenclasses = d["attributes"], d["seen"]
    data.ntrain, data.train_cls_num = len(d["train_y"]), len(d["seen"])
    data.real_proto = souls.clone()
    net_g, net_d = model.MLP_G(opt).to(device), model.MLP_CRITIC(opt).to(device)
    pre = c2.LINEAR_LOGSOFTMAX(opt.resSize, len(d["seen"])).to(device).requires_grad_(False)
    b, dev = opt.batch_size, torch.device(device)
    ns = {
        "torch": torch,
        "np": __import__("numpy"),
        "Variable": Variable,
        "autograd": autograd,
        "util": util,
        "opt": opt,
        "data": data,
        "netG": net_g,
        "netD": net_d,
        "pretrain_cls": types.SimpleNamespace(model=pre),
        "cls_criterion": nn.NLLLoss(),
        "optimizerD": torch.optim.Adam(net_d.parameters(), lr=cfg.lr, betas=(0.5, 0.999)),
        "optimizerG": torch.optim.Adam(net_g.parameters(), lr=cfg.lr, betas=(0.5, 0.999)),
        "input_res": torch.zeros(b, opt.resSize, device=dev),
        "input_att": torch.zeros(b, opt.attSize, device=dev),
        "noise": torch.zeros(b, opt.nz, device=dev),
        "input_label": torch.zeros(b, dtype=torch.long, device=dev),
        "one": torch.tensor(1.0, device=dev),
        "mone": torch.tensor(-1.0, device=dev),
        "_device": dev,
    }
    exec(compile(defs, str(repo / "lisgan.py"), "exec"), ns)  # noqa: S102
    code = compile(body, str(repo / "lisgan.py"), "exec")

    def step():
        exec(code, ns)  # noqa: S102

    return step


@register_bench("vision", "lisgan_step")
def bench_lisgan_step(
    *,
    device: str = "cpu",
    quick: bool = False,
    feat_dim: int = 128,
    n_attributes: int = 24,
    hidden: int = 512,
    n_classes: int = 40,
    n_unseen: int = 10,
    batch_size: int = 64,
) -> dict:
    """One LisGAN training step (5 critic updates with the gradient penalty, one generator update
    with the classification and both soul-sample losses) of our recipe vs the official
    ``lisgan.py`` step (with ``LISGAN_OFFICIAL_REPO`` set to a checkout), and our f-CLSWGAN step
    (the same GAN without the soul losses; the reference when the official code is absent).
    Default sizes: the full reproduce preset (SynthZSL 30/10 classes, 128-d features)."""
    from invariance.vision.recipes.lisgan import LisGANConfig, LisGANRecipe

    cfg = LisGANConfig(
        feat_dim=feat_dim,
        n_attributes=n_attributes,
        hidden=hidden,
        n_classes=n_classes,
        n_unseen=n_unseen,
        batch_size=batch_size,
        n_per_class=60,
        lr=1e-3,
    )
    fns = {}
    souls = None
    for variant in ("fclswgan", "lisgan"):
        r = LisGANRecipe()
        c = dataclasses.replace(cfg, variant=variant)
        r.make_data(c, "train")
        model = r.build(c).to(device)
        r.data = {k: v.to(device) for k, v in r.data.items()}
        opt = r.optimizer(c, model)
        n = len(r.data["train_y"])
        g = torch.Generator().manual_seed(1)

        def step(r=r, model=model, opt=opt, n=n, g=g):
            y = r.data["train_y"][torch.randint(0, n, (cfg.batch_size,), generator=g)]
            r.train_step(model, {"y": y}, opt, 0)

        fns[f"{'f-CLSWGAN' if variant == 'fclswgan' else 'LisGAN'} step (ours)"] = step
        souls, data = model.souls, r.data
    repo = _lisgan_repo()
    if repo is not None:
        fns["official lisgan.py step"] = _official_lisgan_step(repo, data, souls, cfg, device)
    n_seen = n_classes - n_unseen
    rows = compare(
        fns,
        reference="official lisgan.py step" if repo else "f-CLSWGAN step (ours)",
        device=device,
        label=f"batch {batch_size}, {feat_dim}-d features, {n_attributes} attributes, hidden "
        f"{hidden}, {n_seen} seen classes x 3 soul samples, 5 critic + 1 generator updates",
        **_repeats(quick),
    )
    return {"rows": rows, "machine": machine(device)}


@register_bench("vision", "lisgan_cascade")
def bench_lisgan_cascade(
    *,
    device: str = "cpu",
    quick: bool = False,
    feat_dim: int = 128,
    n_unseen: int = 10,
    syn_num: int = 300,
    n_test: int = 3000,
    epochs: int = 30,
    ratio: float = 0.6,
) -> dict:
    """LisGAN's two-stage recognition on the same features: our stage-1 classifier +
    :func:`~invariance.vision.recipes.lisgan.cascade_predict` (fixed epochs) vs the official
    ``classifier2.CLASSIFIER(..., generalized=False)`` (``fit_zsl``: the same two training
    stages, plus its per-epoch evaluation on the test set, which is its model selection, and
    its 1-NN read-out), with ``LISGAN_OFFICIAL_REPO`` set; without it, stage 1 alone is the
    reference."""
    import contextlib
    import io
    import types

    from invariance.vision.recipes.lisgan import _train_softmax, cascade_predict

    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(n_unseen, feat_dim, generator=g)
    syn_y = torch.arange(n_unseen).repeat_interleave(syn_num)
    syn = (centres[syn_y] + torch.randn(len(syn_y), feat_dim, generator=g)).relu()
    test_y = torch.randint(0, n_unseen, (n_test,), generator=g)
    test_x = (centres[test_y] + 1.5 * torch.randn(n_test, feat_dim, generator=g)).relu()
    batch = 2 * syn_num

    def stage1():
        return _train_softmax(syn, syn_y, n_unseen, epochs=epochs, batch=batch, seed=0)

    def ours():
        lin = stage1()
        cascade_predict(lin, syn, syn_y, test_x, ratio=ratio, epochs=epochs, batch=batch, seed=1)

    fns = {"stage 1 only (ours)": stage1, "two-stage cascade (ours)": ours}
    repo = _lisgan_repo()
    if repo is not None:
        c2 = _load_official(repo, "classifier2")
        data = types.SimpleNamespace(
            test_seen_feature=test_x[:1],
            test_seen_label=test_y[:1],
            test_unseen_feature=test_x,
            test_unseen_label=test_y,
            seenclasses=torch.tensor([n_unseen]),
            unseenclasses=torch.arange(n_unseen),
        )

        def official():
            with contextlib.redirect_stdout(io.StringIO()):
                c2.CLASSIFIER(
                    syn, syn_y, data, n_unseen, False, 1e-3, 0.5, epochs, batch, False, ratio
                )

        fns["official classifier2 fit_zsl"] = official
    rows = compare(
        fns,
        reference="official classifier2 fit_zsl" if repo else "stage 1 only (ours)",
        device="cpu",
        label=f"{n_unseen} classes x {syn_num} generated + {n_test} test features "
        f"({feat_dim}-d), {epochs} epochs per stage, ratio {ratio}",
        **_repeats(quick),
    )
    return {"rows": rows, "machine": machine("cpu")}
