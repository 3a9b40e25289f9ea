import pytest
import torch

from invariance.core import groups as G


def gen(s=0):
    return torch.Generator().manual_seed(s)


@pytest.mark.parametrize("sampler,proper", [(G.haar_so3, True), (G.haar_o3, False)])
def test_haar_orthogonal_and_determinant(sampler, proper):
    r = sampler(2000, generator=gen())
    eye = torch.eye(3, dtype=r.dtype)
    assert (r @ r.transpose(1, 2) - eye).abs().max() < 1e-12
    det = torch.linalg.det(r)
    if proper:
        assert torch.allclose(det, torch.ones_like(det))
    else:
        frac = (det < 0).double().mean()
        assert 0.45 < frac < 0.55


def test_haar_so3_is_uniform_not_small_angles():
    # Haar on SO(3): the rotation angle has density (1 - cos t)/pi, mean pi/2 + 2/pi ~ 2.207.
    r = G.haar_so3(20000, generator=gen(1))
    angle = torch.arccos(((torch.diagonal(r, dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1))
    assert abs(float(angle.mean()) - (torch.pi / 2 + 2 / torch.pi)) < 0.02
    # and R[:, :, 0] is uniform on the sphere: mean ~ 0
    assert r[:, :, 0].mean(0).abs().max() < 0.03


def test_so2_rotation():
    r = G.haar_so2(10, generator=gen())
    assert torch.allclose(torch.linalg.det(r), torch.ones(10, dtype=r.dtype))


def test_rigid_motion_row_vector_convention():
    r, t = G.rand_rigid(3, generator=gen())
    x = torch.randn(5, 3, dtype=torch.float64)
    y = G.SE3().act("points", (r, t), x)
    assert torch.allclose(y, x @ r.T + t)
    assert torch.allclose(G.SE3().act("vector", (r, t), x), x @ r.T)


def test_permutation_relabels_edges_consistently():
    x = torch.arange(5.0).unsqueeze(1)
    ei = torch.tensor([[0, 1, 3], [1, 2, 4]])
    perm = G.rand_permutation(5, generator=gen(3))
    x2, ei2 = G.permute_graph(x, ei, perm)
    # every edge connects the same features before and after
    before = {(float(x[a]), float(x[b])) for a, b in ei.T.tolist()}
    after = {(float(x2[a]), float(x2[b])) for a, b in ei2.T.tolist()}
    assert before == after
    assert torch.equal(G.invert_permutation(perm)[perm], torch.arange(5))


def test_permutation_length_mismatch_is_clear():
    with pytest.raises(ValueError, match="length 3 does not match size 4"):
        G.permute_nodes(torch.zeros(4, 2), torch.arange(3))
    with pytest.raises(ValueError, match=r"shape \(2, E\)"):
        G.relabel_edge_index(torch.zeros(3, 4, dtype=torch.long), torch.arange(3))


def test_d4_elements_are_eight_distinct_actions():
    img = torch.arange(16.0).reshape(4, 4)
    outs = {tuple(G.d4_act(img, k, f).flatten().tolist()) for k, f in G.D4_ELEMENTS}
    assert len(outs) == 8
    # rot90 four times is the identity
    assert torch.equal(G.d4_act(G.d4_act(img, 2), 2), img)


def test_shift_and_delay():
    x = torch.arange(6.0)
    assert G.cyclic_shift(x, 2).tolist() == [4, 5, 0, 1, 2, 3]
    assert G.delay(x, 2).tolist() == [0, 0, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="delay must be >= 0"):
        G.delay(x, -1)


def test_gl_and_sl_samplers():
    a = G.rand_gl_plus(4, generator=gen())
    assert torch.linalg.det(a) > 0
    assert torch.linalg.cond(a) <= 10 + 1e-9
    s = G.rand_sl(3, generator=gen(2))
    assert abs(float(torch.linalg.det(s)) - 1) < 1e-12


def test_samplers_are_reproducible_with_generator():
    assert torch.equal(G.haar_so3(generator=gen(7)), G.haar_so3(generator=gen(7)))
    assert not torch.equal(G.haar_so3(generator=gen(7)), G.haar_so3(generator=gen(8)))


def test_unknown_representation_is_clear():
    with pytest.raises(ValueError, match="no representation 'image'"):
        G.SO3().act("image", torch.eye(3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="last dim of the input to be 3"):
        G.SO3().act("vector", torch.eye(3, dtype=torch.float64), torch.zeros(2, 4))


def test_product_group_acts_factorwise():
    grp = G.Product(G.SO3(), G.Permutation())
    g = grp.sample(gen(), [torch.zeros(5, 3)])
    x = torch.randn(5, 3, dtype=torch.float64)
    y = grp.act(("vector", "nodes"), g, x)
    assert torch.allclose(y, (x @ g[0].T)[g[1]])
    with pytest.raises(ValueError, match="tuple of 2 entries"):
        grp.act("vector", g, x)
