"""TSFM scaling models: the Student-t mixture NLL against torch.distributions and scipy, the scaler, decoder
causality, encoder masking, the pretraining objectives and the size ladder."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from paperzoo.core.errors import ConfigError
from paperzoo.timeseries.scaling.data import generated_series, windows
from paperzoo.timeseries.scaling.model import (
    SIZES,
    MixtureParams,
    PatchTSFM,
    StudentTMixtureHead,
    TSFMOutput,
    forecast_distribution,
    forecast_nll,
    mixture_distribution,
    mixture_log_prob,
    mixture_mean,
    num_parameters,
    std_scaler,
    student_t_log_prob,
    tail_mask,
    tsfm,
    tsfm_nll,
)


def test_student_t_log_prob_matches_scipy_on_a_hand_case():
    value, df, loc, scale = 1.3, 3.5, -0.2, 0.7
    ours = student_t_log_prob(*(torch.tensor(v, dtype=torch.float64) for v in (value, df, loc, scale)))
    assert float(ours) == pytest.approx(stats.t.logpdf(value, df, loc, scale), rel=1e-12)


def test_mixture_nll_matches_torch_distributions_and_a_hand_sum():
    generator = torch.Generator().manual_seed(0)
    shape = (2, 3, 4, 4)  # [B, N, P, K]
    params = MixtureParams(
        torch.randn(shape, generator=generator, dtype=torch.float64),
        2.0 + torch.rand(shape, generator=generator, dtype=torch.float64) * 5,
        torch.randn(shape, generator=generator, dtype=torch.float64),
        0.1 + torch.rand(shape, generator=generator, dtype=torch.float64),
    )
    value = torch.randn(shape[:-1], generator=generator, dtype=torch.float64)
    expected = mixture_distribution(params).log_prob(value)
    torch.testing.assert_close(mixture_log_prob(params, value), expected)
    # one element by hand: log sum_k w_k t_k(x) with scipy's density
    w = torch.softmax(params.logits[0, 0, 0], -1).numpy()
    x = float(value[0, 0, 0])
    df, loc, scale = (getattr(params, name)[0, 0, 0].numpy() for name in ("df", "loc", "scale"))
    density = sum(w[k] * stats.t.pdf(x, df[k], loc[k], scale[k]) for k in range(4))
    assert float(mixture_log_prob(params, value)[0, 0, 0]) == pytest.approx(math.log(density), rel=1e-10)
    torch.testing.assert_close(mixture_mean(params), mixture_distribution(params).mean)


def test_head_maps_to_the_distribution_domains():
    head = StudentTMixtureHead(dim=8, patch_size=4, components=4)
    params = head(torch.randn(2, 5, 8) * 100)
    assert params.logits.shape == (2, 5, 4, 4)
    assert bool((params.df >= 2).all()) and bool((params.scale > 0).all())  # softplus underflows to 0 at -100


def test_nll_in_data_units_is_the_affine_transformed_density():
    generator = torch.Generator().manual_seed(1)
    shape = (2, 3, 4, 4)
    params = MixtureParams(
        torch.randn(shape, generator=generator),
        2.5 + torch.rand(shape, generator=generator),
        torch.randn(shape, generator=generator),
        0.5 + torch.rand(shape, generator=generator),
    )
    loc, scale = torch.tensor([[[3.0]], [[-1.0]]]), torch.tensor([[[10.0]], [[0.5]]])
    out = TSFMOutput(params, loc, scale)
    target = torch.randn(2, 3, 4, generator=generator) * 5
    # change of variables y = loc + scale * z (torch's TransformedDistribution takes ~20 s to build here, so by hand)
    expected = -mixture_distribution(params).log_prob((target - loc) / scale) + torch.log(scale)
    torch.testing.assert_close(out.nll(target), expected)
    # and the density integrates to one in the data's units (one element, trapezoid rule)
    grid = torch.linspace(-400.0, 400.0, 200_001)
    one = MixtureParams(*(field[0, 0, 0].expand(len(grid), 4) for field in params))
    density = torch.exp(-TSFMOutput(one, loc[0], scale[0]).nll(grid))  # [1, G]
    assert float(torch.trapezoid(density.squeeze(), grid)) == pytest.approx(1.0, abs=2e-3)
    torch.testing.assert_close(out.nll(target) - out.nll(target, standardized=True), torch.log(scale).expand(2, 3, 4))


def test_std_scaler_uses_the_context_patches_only_with_bessels_correction():
    patches = torch.randn(2, 5, 4, dtype=torch.float64)
    context = torch.tensor([[True, True, False, False, False], [True, True, True, True, False]])
    loc, scale = std_scaler(patches, context)
    for b in range(2):
        seen = patches[b][context[b]].flatten().numpy()
        assert float(loc[b]) == pytest.approx(seen.mean())
        assert float(scale[b]) == pytest.approx(math.sqrt(seen.var(ddof=1) + 1e-5))


def test_decoder_is_causal():
    torch.manual_seed(0)
    model = tsfm("s", "decoder", patch_size=4).eval()
    patches = torch.randn(2, 8, 4)
    context = tail_mask(8, torch.tensor([6, 6])).logical_not()  # the scaler sees patches 0 and 1
    reference = model(patches, context).params
    for t in range(1, 7):
        changed = patches.clone()
        changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :]) * 10
        out = model(changed, context).params
        for field, ref in zip(out, reference, strict=True):
            torch.testing.assert_close(field[:, : t + 1], ref[:, : t + 1])
        assert not torch.allclose(out.loc[:, t + 1 :], reference.loc[:, t + 1 :])


def test_encoder_masks_exactly_the_chosen_patches():
    torch.manual_seed(0)
    model = tsfm("s", "encoder", patch_size=4).eval()
    patches = torch.randn(2, 8, 4)
    mask = tail_mask(8, torch.tensor([3, 2]))
    reference = model(patches, ~mask, mask).params
    # the values under the mask are never seen
    hidden = torch.where(mask.unsqueeze(-1), torch.randn_like(patches) * 100, patches)
    for field, ref in zip(model(hidden, ~mask, mask).params, reference, strict=True):
        torch.testing.assert_close(field, ref)
    # every visible patch is seen, by every position (bidirectional attention): changing the first one moves the last
    for visible in (0, 4):
        changed = patches.clone()
        changed[:, visible] += 1.0
        out = model(changed, ~mask, mask).params
        assert not torch.allclose(out.loc[0, -1], reference.loc[0, -1])
    with pytest.raises(ConfigError, match="mask"):
        model(patches, ~mask)


def test_pretraining_nll_weighs_only_the_predicted_patches():
    torch.manual_seed(0)
    for kind in ("encoder", "decoder"):
        model = tsfm("xs", kind, patch_size=4).eval()
        patches = torch.randn(3, 8, 4)
        num = torch.tensor([2, 3, 4])
        loss = tsfm_nll(model, patches, num)
        predicted = tail_mask(8, num)
        if kind == "encoder":
            nll = model(patches, ~predicted, predicted).nll(patches)
            expected = nll[predicted].mean()
        else:
            nll = model(patches[:, :-1], ~predicted[:, :-1]).nll(patches[:, 1:])
            expected = nll[predicted[:, 1:]].mean()
        torch.testing.assert_close(loss, expected)


def test_decoder_forecast_rolls_out_its_own_mean():
    torch.manual_seed(0)
    model = tsfm("xs", "decoder", patch_size=4).eval()
    past, future = torch.randn(2, 16), torch.randn(2, 8)
    out = forecast_distribution(model, past, 8)
    context = past.unflatten(1, (4, 4))
    first = model(context, torch.ones(2, 4, dtype=torch.bool))
    torch.testing.assert_close(out.params.loc[:, :1], first.params.loc[:, -1:])
    fed = torch.cat([context, first.mean()[:, -1:]], 1)
    second = model(fed, torch.tensor([True] * 4 + [False]).expand(2, -1))
    torch.testing.assert_close(out.params.loc[:, 1:], second.params.loc[:, -1:])
    assert forecast_nll(model, past, future).shape == (2,)


def test_size_ladder_grows_about_four_fold():
    for kind in ("encoder", "decoder"):
        counts = [num_parameters(tsfm(size, kind)) for size in SIZES]
        assert counts == sorted(counts)
        ratios = np.array(counts[1:]) / np.array(counts[:-1])
        assert np.all((ratios > 3) & (ratios < 5)), ratios
        assert 8_000 < counts[0] < 15_000 and 400_000 < counts[-1] < 800_000
    with pytest.raises(ConfigError, match="unknown TSFM size"):
        tsfm("xl")
    with pytest.raises(ConfigError, match="kind"):
        PatchTSFM(kind="seq2seq")  # type: ignore[arg-type]


def test_generated_windows_split_in_time():
    series = generated_series(3, 100, seed=0)
    assert len(series) == 3 and all(np.isfinite(s).all() for s in series)
    w = windows(np.arange(20.0), 8, 4, max_windows=2)
    np.testing.assert_array_equal(w[:, 0], [0.0, 12.0])
    assert windows(np.arange(5.0), 8, 4).shape == (0, 8)
