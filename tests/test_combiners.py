"""The gradient combiners on hand-made 2- and 3-gradient examples whose answers are worked out here."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torchjd.aggregation import GradVacWeighting

from xlgap.combiners import (
    COMBINERS,
    LFMLF,
    MGDA,
    CombinerError,
    GradVac,
    PCGrad,
    Uniform,
    UpdateGradients,
    build_combiner,
    gradvac_weights,
    lf_mlf_weights,
    min_norm_weights,
    pcgrad_weights,
)
from xlgap.combiners import qp as qp_module
from xlgap.combiners.base import seeded_global_rng

F64 = torch.float64


def grads_of(vectors: list[list[float]], step: int = 0, seed: int = 1, layers: int = 1) -> UpdateGradients:
    """UpdateGradients of explicit gradients (split into `layers` equal slices)."""
    g = torch.tensor(vectors, dtype=F64)
    parts = g.chunk(layers, dim=1)
    layer_grams = torch.stack([p @ p.T for p in parts])
    return UpdateGradients(layer_grams=layer_grams, step=step, seed=seed, dot=lambda v: g @ v.to(F64))


def test_uniform_is_the_mean():
    assert torch.equal(Uniform().weights(grads_of([[1, 0], [0, 1], [1, 1]])), torch.full((3,), 1 / 3, dtype=F64))


def test_min_norm_of_two_conflicting_gradients():
    # g1 = (1, 0), g2 = (-1, 1): |a g1 + (1-a) g2|^2 = 5a^2 - 6a + 2, minimal at a = 0.6; d = (0.2, 0.4)
    # has d.g1 = d.g2 = 0.2 >= 0.
    w = min_norm_weights(torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=F64))
    assert w.tolist() == pytest.approx([0.6, 0.4], abs=1e-6)


def test_min_norm_when_one_gradient_dominates():
    # g1 = (10, 0), g2 = (0, 1): 100a^2 + (1-a)^2 is minimal at a = 1/101: the small gradient gets the weight.
    assert MGDA().weights(grads_of([[10, 0], [0, 1]])).tolist() == pytest.approx([1 / 101, 100 / 101], abs=1e-6)
    # aligned gradients of different length: the shorter one is the min-norm point
    assert MGDA().weights(grads_of([[1, 0], [2, 0]])).tolist() == pytest.approx([1, 0], abs=1e-6)


def test_min_norm_of_three_orthogonal_gradients_is_uniform():
    assert MGDA().weights(grads_of([[1, 0, 0], [0, 1, 0], [0, 0, 1]])).tolist() == pytest.approx([1 / 3] * 3, abs=1e-6)


def test_lf_mlf_turns_away_from_the_direction_already_travelled():
    # G = I, g_bar = (1, 0): c = (1, 0); 1/2 (a^2 + (1-a)^2) + a has derivative 2a > 0, so a = 0:
    # |g_bar + d|^2 = (1 + a)^2 + (1 - a)^2 is smallest for d = g2.
    assert lf_mlf_weights(torch.eye(2, dtype=F64), torch.tensor([1.0, 0.0], dtype=F64)).tolist() == pytest.approx([0, 1], abs=1e-5)


def test_lf_mlf_descent_constraints_bind():
    # g1 = (1, 0), g2 = (-1, 1), w = (a, 1-a): (Gw)_1 = 2a - 1 >= 0 and (Gw)_2 = 2 - 3a >= 0, so a in [1/2, 2/3].
    # The objective's unconstrained minimiser is a* = (3 - c1 + c2) / 5.
    gram = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=F64)
    # g_bar = (1, 0): c = (1, -1), a* = 0.2, clipped by the first constraint to 1/2: d = (0, 0.5), d.g1 = 0
    assert lf_mlf_weights(gram, torch.tensor([1.0, -1.0], dtype=F64)).tolist() == pytest.approx([0.5, 0.5], abs=1e-5)
    # g_bar = (-1, 0): c = (-1, 1), a* = 1, clipped by the second constraint to 2/3: d = (1/3, 1/3), d.g2 = 0
    assert lf_mlf_weights(gram, torch.tensor([-1.0, 1.0], dtype=F64)).tolist() == pytest.approx([2 / 3, 1 / 3], abs=1e-5)
    # g_bar = (0, 0) (the first update, Algorithm 1): a* = 0.6 is feasible, the MGDA point
    assert lf_mlf_weights(gram, torch.zeros(2, dtype=F64)).tolist() == pytest.approx([0.6, 0.4], abs=1e-5)


def test_lf_mlf_accumulates_the_applied_direction():
    vectors = [[1.0, 0.0], [-1.0, 1.0]]
    combiner = LFMLF()
    first = combiner.weights(grads_of(vectors, step=0))  # g_bar = 0: MGDA weights 0.6, 0.4
    assert first.tolist() == pytest.approx([0.6, 0.4], abs=1e-5)
    combiner.applied(torch.tensor([1.0, 0.0]))  # pretend the applied direction was (1, 0)
    assert combiner.direction.tolist() == [1.0, 0.0]
    assert combiner.weights(grads_of(vectors, step=1)).tolist() == pytest.approx([0.5, 0.5], abs=1e-5)
    combiner.applied(torch.tensor([0.0, 0.5]))
    assert combiner.direction.tolist() == [1.0, 0.5]
    restored = LFMLF()
    restored.load_state_dict(combiner.state_dict())
    assert torch.equal(restored.direction, combiner.direction)
    assert restored.report()["solved_updates"] == 2 and restored.report()["updates_with_active_descent_constraint"] == 1


def test_lf_mlf_on_random_gradients_satisfies_problem_2():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        g = torch.randn(3, 7, generator=generator, dtype=F64)
        g_bar = torch.randn(7, generator=generator, dtype=F64) * 3
        gram, c = g @ g.T, g @ g_bar
        w = lf_mlf_weights(gram, c)
        assert w is not None and abs(float(w.sum()) - 1) < 1e-9 and float(w.min()) >= 0
        assert float((gram @ w).min()) >= -1e-6 * float(gram.diagonal().mean())
        # no feasible point on a fine grid of the simplex has a lower objective
        best = math.inf
        steps = 60
        for i in range(steps + 1):
            for j in range(steps + 1 - i):
                v = torch.tensor([i, j, steps - i - j], dtype=F64) / steps
                if float((gram @ v).min()) >= 0:
                    best = min(best, float(0.5 * v @ gram @ v + v @ c))
        assert float(0.5 * w @ gram @ w + w @ c) <= best + 1e-6


def test_lf_mlf_failed_solve_falls_back_to_mgda_and_is_counted(monkeypatch, caplog):
    import xlgap.combiners.lf_mlf as lf_mlf

    monkeypatch.setattr(lf_mlf, "lf_mlf_weights", lambda gram, c: None)
    combiner = LFMLF()
    w = combiner.weights(grads_of([[1.0, 0.0], [-1.0, 1.0]], step=4))
    assert w.tolist() == pytest.approx([0.6, 0.4], abs=1e-5)
    assert combiner.report()["failed_updates"] == [5] and "update 5" in caplog.text
    with pytest.raises(CombinerError, match="update 5"):
        LFMLF(on_failure="stop").weights(grads_of([[1.0, 0.0], [-1.0, 1.0]], step=4))


def test_an_infeasible_problem_is_reported_not_solved():
    # An indefinite "Gram" matrix (no real gradients have it): (Gw)_1 = a - 2(1-a) >= 0 needs a >= 2/3,
    # (Gw)_2 = -2a + (1-a) >= 0 needs a <= 1/3: the feasible set is empty.
    assert qp_module.solve_simplex_qp(torch.tensor([[1.0, -2.0], [-2.0, 1.0]], dtype=F64), descent=True) is None
    assert qp_module.solve_simplex_qp(torch.tensor([[math.nan, 0.0], [0.0, 1.0]], dtype=F64)) is None


def test_pcgrad_on_two_conflicting_gradients():
    # g1 = (1, 0), g2 = (-1, 1), g1.g2 = -1: g1' = g1 + g2/2 = (0.5, 0.5), g2' = g2 + g1 = (0, 1);
    # the sum is 2 g1 + 1.5 g2, the mean half of it.
    assert PCGrad().weights(grads_of([[1, 0], [-1, 1]])).tolist() == pytest.approx([1.0, 0.75])
    # no conflict: the plain mean
    assert PCGrad().weights(grads_of([[1, 0], [1, 1]])).tolist() == pytest.approx([0.5, 0.5])


def test_pcgrad_orders_depend_on_seed_and_step_only():
    g = torch.randn(4, 6, generator=torch.Generator().manual_seed(3), dtype=F64)
    g[1] = -g[0] + 0.1 * g[1]  # make conflicts likely, so that the order matters
    gram = g @ g.T
    draws = {tuple(pcgrad_weights(gram, s).tolist()) for s in range(20)}
    assert len(draws) > 1  # the order matters for these gradients
    torch.manual_seed(0)
    a = pcgrad_weights(gram, 7)
    torch.manual_seed(123)
    b = pcgrad_weights(gram, 7)
    assert torch.equal(a, b)


def test_gradvac_first_step_equals_pcgrad_and_then_follows_its_target():
    # With phi_hat = 0 the vaccine projects exactly as PCGrad: g1' = g1 + 0.5 g2, g2' = g2 + g1.
    combiner = GradVac(beta=0.01)
    vectors = [[1.0, 0.0], [-1.0, 1.0]]
    assert combiner.weights(grads_of(vectors))[0].tolist() == pytest.approx([1.0, 0.75])
    phi = -1 / math.sqrt(2)
    assert combiner.phi_hat[0].flatten().tolist() == pytest.approx([0, 0.01 * phi, 0.01 * phi, 0])
    # second step: target phi_hat = 0.01 phi; coefficient |g_i| (t sqrt(1-phi^2) - phi sqrt(1-t^2)) / (|g_j| sqrt(1-t^2))
    t = 0.01 * phi
    k12 = 1 * (t * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - t**2)) / (math.sqrt(2) * math.sqrt(1 - t**2))
    k21 = math.sqrt(2) * (t * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - t**2)) / (1 * math.sqrt(1 - t**2))
    expected = [(1 + k21) / 2, (k12 + 1) / 2]
    assert combiner.weights(grads_of(vectors, step=1))[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_gradvac_leaves_agreeing_gradients_alone_and_raises_its_target():
    combiner = GradVac(beta=0.5)
    w = combiner.weights(grads_of([[1.0, 0.0], [1.0, math.sqrt(3)]]))[0]  # cosine 0.5 above the target 0
    assert w.tolist() == pytest.approx([0.5, 0.5])
    assert combiner.phi_hat[0, 0, 1] == pytest.approx(0.25)


def test_gradvac_is_per_layer():
    # layer 1 conflicts (first coordinates), layer 2 agrees: only layer 1's weights change
    w = GradVac().weights(grads_of([[1.0, 1.0], [-1.0, 1.0]], layers=2))
    assert w.shape == (2, 2)
    assert w[0].tolist() == pytest.approx([1.0, 1.0])  # (g1 + g2 + g2 + g1) / 2 at this layer: orthogonalised
    assert w[1].tolist() == pytest.approx([0.5, 0.5])


def test_gradvac_matches_torchjd_on_random_gram_matrices():
    g = torch.randn(4, 9, generator=torch.Generator().manual_seed(5), dtype=F64)
    gram = g @ g.T
    ours_target = torch.zeros(4, 4, dtype=F64)
    theirs = GradVacWeighting(beta=0.3, eps=1e-8)
    for step in range(3):
        ours = gradvac_weights(gram, ours_target, 0.3, torch.Generator().manual_seed(step))
        with seeded_global_rng(step):
            reference = theirs(gram)
        assert ours.tolist() == pytest.approx(reference.tolist(), rel=1e-9, abs=1e-12)


def test_gradvac_state_round_trip():
    combiner = GradVac()
    combiner.weights(grads_of([[1.0, 0.0], [-1.0, 1.0]]))
    restored = GradVac()
    restored.load_state_dict(combiner.state_dict())
    a = combiner.weights(grads_of([[1.0, 0.0], [-1.0, 1.0]], step=1))
    b = restored.weights(grads_of([[1.0, 0.0], [-1.0, 1.0]], step=1))
    assert torch.equal(a, b)


def test_build_combiner_errors_name_the_key():
    assert isinstance(build_combiner("lf-mlf", {"on_failure": "stop"}), LFMLF)
    with pytest.raises(CombinerError, match="unknown combiner 'pcgard' \\(did you mean 'pcgrad'"):
        build_combiner("pcgard")
    with pytest.raises(CombinerError, match="options.momentum: not an option of combiner 'gradvac'"):
        build_combiner("gradvac", {"momentum": 1})
    with pytest.raises(
        CombinerError, match="options.on_failure: expected one of 'mgda', 'stop', got 'ignore'"
    ):
        build_combiner("lf-mlf", {"on_failure": "ignore"})
    with pytest.raises(CombinerError, match="options.beta: expected a number, got 'fast'"):
        build_combiner("gradvac", {"beta": "fast"})
    assert build_combiner("gradvac", {"beta": "1e-3"}).beta == 0.001  # YAML 1.1 reads 1e-3 as a string
    with pytest.raises(ValueError, match="lf-mlf on_failure: expected one of 'mgda', 'stop'"):
        LFMLF(on_failure="ignore")  # built in Python, checked the same way


@pytest.mark.parametrize("name", sorted(COMBINERS))
def test_every_combiner_resumes_exactly_from_its_state(name):
    """The contract of every registered combiner: weights of the right shape whose state round-trips, so a
    combiner restored after update k gives the same weights at k + 1 as the uninterrupted one."""
    generator = torch.Generator().manual_seed(11)
    updates = [torch.randn(3, 8, generator=generator, dtype=F64) for _ in range(4)]

    def feed(combiner, gradients, first_step):
        out = []
        for step, g in enumerate(gradients, start=first_step):
            grads = UpdateGradients(torch.stack([g[:, :4] @ g[:, :4].T, g[:, 4:] @ g[:, 4:].T]), step, 3, lambda v, g=g: g @ v.to(F64))
            w = combiner.weights(grads)
            assert w.shape in ((3,), (2, 3)) and torch.isfinite(w).all()
            direction = (w if w.dim() == 1 else w.mean(0)).float() @ g.float()
            combiner.applied(direction)
            out.append(w)
        return out

    whole = feed(build_combiner(name), updates, 0)
    first = build_combiner(name)
    feed(first, updates[:2], 0)
    import tempfile
    from pathlib import Path

    from xlgap.train.checkpoints import load_state_tensors, save_state_tensors

    with tempfile.TemporaryDirectory() as folder:
        saved = save_state_tensors(first.state_dict(), Path(folder) / "t.safetensors")
        restored = build_combiner(name)
        restored.load_state_dict(load_state_tensors(json.loads(json.dumps(saved)), Path(folder) / "t.safetensors"))
    rest = feed(restored, updates[2:], 2)
    for a, b in zip(whole[2:], rest, strict=True):
        assert torch.equal(a, b)
