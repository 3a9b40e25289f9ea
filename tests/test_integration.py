"""Packages used together, as a user would: a geometry model trained with an invariance-optim
optimizer, a graph classifier trained with the Z-loss head, a MIP hypernetwork producing a
geometry layer. Each asserts that it learns and that the symmetry survives, with a negative
control that shows the symmetry check can fail."""

import pytest
import torch
from torch import nn

from invariance.core import groups as G
from invariance.core.testing import as_float64, assert_invariant, assert_not_invariant

geometry = pytest.importorskip("invariance.geometry")
optim = pytest.importorskip("invariance.optim")


def _clouds(n: int, points: int, seed: int, rotate: bool):
    """Two classes of anisotropic Gaussian clouds (axes 3:1:1 vs 2:2:1), optionally rotated."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    axes = torch.tensor([[3.0, 1.0, 1.0], [2.0, 2.0, 1.0]])[y]
    x = torch.randn(n, points, 3, generator=g) * axes[:, None, :]
    if rotate:  # one random rotation per cloud
        Rs = torch.stack([G.SO3().sample(g, [x]) for _ in range(n)])
        x = torch.einsum("bij,bnj->bni", Rs.to(x.dtype), x)
    return x, y


def test_frame_averaging_trained_with_adamp_learns_and_stays_invariant():
    torch.manual_seed(0)
    fa = geometry.FrameAveraging(geometry.PointNet(num_classes=2, hidden=16, global_dim=32))
    opt = optim.create_optimizer(fa, "adamp", lr=3e-3, weight_decay=1e-4)
    assert type(opt).__name__ == "AdamP"
    x, y = _clouds(128, 32, seed=0, rotate=False)  # trained on aligned clouds only
    for _ in range(60):
        loss = nn.functional.cross_entropy(fa(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    xt, yt = _clouds(128, 32, seed=1, rotate=True)  # tested on rotated ones
    fa.eval()
    with torch.no_grad():
        acc = (fa(xt).argmax(-1) == yt).float().mean().item()
    assert acc > 0.9, acc
    assert_invariant(fa, (xt[:8],), G.O3(), ("points",))
    # negative control: the trained backbone alone is not rotation-invariant
    assert_not_invariant(fa.backbone, (xt[:8],), G.SO3(), ("points",))


def test_graph_classifier_with_the_zloss_head_learns_and_is_permutation_invariant():
    graph = pytest.importorskip("invariance.graph")
    from torch_geometric.data import Batch, Data

    def make(kind: int, n: int) -> Data:
        if kind == 0:  # cycle
            src = torch.arange(n)
            dst = (src + 1) % n
        elif kind == 1:  # star
            src, dst = torch.zeros(n - 1, dtype=torch.long), torch.arange(1, n)
        else:  # path
            src, dst = torch.arange(n - 1), torch.arange(1, n)
        ei = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1)
        return Data(x=torch.ones(n, 1), edge_index=ei, y=torch.tensor([kind]))

    g = torch.Generator().manual_seed(0)
    graphs = [
        make(int(k), int(n))
        for k, n in zip(
            torch.randint(0, 3, (96,), generator=g), torch.randint(5, 12, (96,), generator=g)
        )
    ]
    torch.manual_seed(0)
    model = graph.GINClassifier(1, 3, hidden=16, num_layers=2)
    loss_fn = optim.ZLoss()
    opt = optim.create_optimizer(model, "adamw", lr=1e-2)
    batch = Batch.from_data_list(graphs)
    for _ in range(80):
        loss = loss_fn(model(batch), batch.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = Batch.from_data_list([make(k, n) for k in range(3) for n in (6, 9, 13)])
    with torch.no_grad():
        acc = (model(test).argmax(-1) == test.y).float().mean().item()
    assert acc > 0.85, acc
    m64 = as_float64(model)
    one = make(2, 9)
    one.x = torch.randn(9, 1, generator=g)  # varied features: outputs really vary
    fn = lambda x, ei: m64(Data(x=x, edge_index=ei, batch=torch.zeros(len(x), dtype=torch.long)))
    assert_invariant(fn, (one.x, one.edge_index), G.Permutation(), ("nodes", "edge_index"))
    # negative control: reading out node 0's embedding is not permutation-invariant
    enc = lambda x, ei: m64.encoder(x, ei, torch.zeros(len(x), dtype=torch.long), None)[0]
    assert_not_invariant(enc, (one.x, one.edge_index), G.Permutation(), ("nodes", "edge_index"))


def test_mip_hypernetwork_produces_a_geometry_layer_that_learns_and_stays_invariant():
    torch.manual_seed(0)
    primary = geometry.PointNet(num_classes=1, hidden=8, global_dim=16)
    hn = optim.HyperNet(primary, cond_dim=1, hidden_sizes=(16, 32), mip=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, 3, generator=g)
    radius = x.norm(dim=-1).mean(dim=1, keepdim=True)
    opt = torch.optim.Adam(hn.parameters(), lr=3e-3)

    def batch_loss(gam):
        pred = hn(gam, x)  # a PointNet whose weights are predicted from gamma
        return ((pred - gam * radius) ** 2).mean()

    grid = [torch.tensor([v]) for v in (0.1, 0.4, 0.7, 1.0)]
    first = sum(float(batch_loss(v)) for v in grid)
    for _ in range(200):
        loss = batch_loss(torch.rand(1, generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sum(float(batch_loss(v)) for v in grid) < 0.3 * first
    gam = torch.tensor([0.7])
    hn64 = as_float64(hn)
    fn = lambda pts: hn64(gam.double(), pts)
    assert_invariant(fn, (x[:8],), G.Permutation(dim=1), ("nodes",))
    # negative control: a primary that reads the first point is not permutation-invariant
    first_point = nn.Sequential(nn.Flatten(), nn.Linear(48, 1))
    hn_bad = as_float64(optim.HyperNet(first_point, cond_dim=1, hidden_sizes=(16, 32)))
    bad = lambda pts: hn_bad(gam.double(), pts)
    assert_not_invariant(bad, (x[:8],), G.Permutation(dim=1), ("nodes",))
