"""Baselines' math: naive/seasonal-naive, DLinear's decomposition and linear maps, PatchTST's patching, RevIN,
residual attention and BatchNorm encoder, against hand-computed values or naive references."""

import math

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.timeseries.baselines import (
    DLinear,
    DLinearTask,
    MovingAverage,
    NaiveForecaster,
    NaiveTask,
    PatchTST,
    PatchTSTTask,
    SeasonalNaiveForecaster,
    SeasonalNaiveTask,
    series_decomposition,
)
from paperzoo.timeseries.baselines.patchtst import PatchTSTEncoderLayer, ResidualAttention
from paperzoo.timeseries.layers import RevIN, num_patches, patchify

# --- naive / seasonal-naive -------------------------------------------------------------------------------------


def _two_channel_window() -> torch.Tensor:
    first = torch.tensor([1.0, 2, 3, 4, 5, 6, 7])
    return torch.stack([first, 10 * first], dim=-1)[None]  # [1, 7, 2]


def test_naive_repeats_the_last_value():
    forecast = NaiveForecaster(prediction_length=4)(_two_channel_window())
    assert torch.equal(forecast[0, :, 0], torch.tensor([7.0, 7, 7, 7]))
    assert torch.equal(forecast[0, :, 1], torch.tensor([70.0, 70, 70, 70]))


@pytest.mark.parametrize(
    ("season", "expected"),
    [
        (3, [5.0, 6, 7, 5, 6, 7, 5, 6]),  # horizon longer than two seasons wraps around the last season
        (7, [1.0, 2, 3, 4, 5, 6, 7, 1]),  # season = L uses the whole window
        (1, [7.0] * 8),
    ],
)
def test_seasonal_naive_repeats_the_last_season(season, expected):
    forecast = SeasonalNaiveForecaster(prediction_length=8, season=season)(_two_channel_window())
    assert forecast.shape == (1, 8, 2)
    assert torch.equal(forecast[0, :, 0], torch.tensor(expected))
    assert torch.equal(forecast[0, :, 1], 10 * torch.tensor(expected))


def test_seasonal_naive_rejects_a_season_longer_than_the_window():
    with pytest.raises(ConfigError, match="season 8 is longer than the lookback window of 7"):
        SeasonalNaiveForecaster(prediction_length=3, season=8)(_two_channel_window())
    with pytest.raises(ConfigError, match="season 48 is longer than the context_length 24"):
        SeasonalNaiveTask(num_channels=2, context_length=24, prediction_length=6, season=48)
    with pytest.raises(ConfigError, match="season must be a positive"):
        SeasonalNaiveForecaster(prediction_length=3, season=0)


def test_naive_tasks_forecast_and_refuse_to_train():
    task = SeasonalNaiveTask(num_channels=2, context_length=7, prediction_length=8, season=3)
    assert torch.equal(task(_two_channel_window())[0, :, 0], torch.tensor([5.0, 6, 7, 5, 6, 7, 5, 6]))
    assert torch.equal(NaiveTask(2, 7, 8)(_two_channel_window())[0, :, 1], torch.full((8,), 70.0))
    with pytest.raises(ConfigError, match="no parameters to fit"):
        task.configure_optimizers()


# --- DLinear --------------------------------------------------------------------------------------------------


def naive_moving_average(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Loop reference: the mean of x over [t - h, t + h], indices clamped to the window (replicate padding)."""
    half = (kernel_size - 1) // 2
    batch, length, channels = x.shape
    out = torch.empty_like(x)
    for b in range(batch):
        for c in range(channels):
            for t in range(length):
                values = [float(x[b, min(max(t + j, 0), length - 1), c]) for j in range(-half, half + 1)]
                out[b, t, c] = sum(values) / kernel_size
    return out


@pytest.mark.parametrize(("length", "kernel_size"), [(11, 5), (7, 25), (30, 25), (9, 1)])
def test_moving_average_matches_a_loop_with_replicated_edges(length, kernel_size):
    x = torch.randn(2, length, 3, dtype=torch.float64)
    trend = MovingAverage(kernel_size)(x)
    assert trend.shape == x.shape
    torch.testing.assert_close(trend, naive_moving_average(x, kernel_size))
    seasonal, trend2 = series_decomposition(x, MovingAverage(kernel_size))
    torch.testing.assert_close(seasonal + trend2, x)


def test_moving_average_edges_by_hand():
    x = torch.tensor([0.0, 3.0, 6.0, 9.0])[None, :, None]  # kernel 3: pad one copy of each end value
    expected = torch.tensor([(0 + 0 + 3) / 3, (0 + 3 + 6) / 3, (3 + 6 + 9) / 3, (6 + 9 + 9) / 3])
    torch.testing.assert_close(MovingAverage(3)(x)[0, :, 0], expected)


def test_moving_average_needs_an_odd_kernel():
    with pytest.raises(ConfigError, match="kernel_size must be a positive odd"):
        MovingAverage(4)


@pytest.mark.parametrize("individual", [False, True])
def test_dlinear_is_the_sum_of_two_linear_maps_on_the_decomposition(individual):
    torch.manual_seed(0)
    length, horizon, channels, kernel = 13, 5, 3, 5
    model = DLinear(length, horizon, channels, kernel_size=kernel, individual=individual).double()
    x = torch.randn(2, length, channels, dtype=torch.float64)
    trend = naive_moving_average(x, kernel)
    seasonal = x - trend
    expected = torch.empty(2, horizon, channels, dtype=torch.float64)
    for c in range(channels):
        w = c if individual else 0
        s_weight, s_bias = model.seasonal.weight[w].detach(), model.seasonal.bias[w].detach()  # [H, L], [H]
        t_weight, t_bias = model.trend.weight[w].detach(), model.trend.bias[w].detach()
        for b in range(2):
            for h in range(horizon):
                s = sum(float(s_weight[h, t]) * float(seasonal[b, t, c]) for t in range(length)) + float(s_bias[h])
                r = sum(float(t_weight[h, t]) * float(trend[b, t, c]) for t in range(length)) + float(t_bias[h])
                expected[b, h, c] = s + r
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    expected_params = 2 * (channels if individual else 1) * (horizon * length + horizon)
    assert sum(p.numel() for p in model.parameters()) == expected_params


def test_dlinear_individual_layers_differ_per_channel_and_shared_ones_do_not():
    x = torch.randn(1, 13, 1).expand(1, 13, 2).contiguous()  # the same series in both channels
    with torch.no_grad():
        shared = DLinear(13, 4, 2, kernel_size=5)(x)
        individual = DLinear(13, 4, 2, kernel_size=5, individual=True)(x)
    torch.testing.assert_close(shared[..., 0], shared[..., 1])
    assert not torch.allclose(individual[..., 0], individual[..., 1])


# --- patching and RevIN ------------------------------------------------------------------------------------------


def test_patch_counts_match_the_paper():
    assert num_patches(336, 16, 8) == 42  # PatchTST/42
    assert num_patches(512, 16, 8) == 64  # PatchTST/64, "64 words"
    assert num_patches(336, 16, 8, pad_end=False) == 41
    with pytest.raises(ConfigError, match="patch_length 16 is longer than the context_length 8"):
        num_patches(8, 16, 8)


def test_patchify_indices_and_end_padding_by_hand():
    x = torch.arange(11.0)[None, :, None].repeat(2, 1, 2)  # [2, 11, 2], value = time index
    x[:, :, 1] += 100
    patches = patchify(x, patch_length=4, stride=3)
    # padded series: 0..10 then 3 copies of 10; patches start at 0, 3, 6, 9 -> N = (11 - 4) // 3 + 2 = 4
    expected = torch.tensor([[0.0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 10, 10, 10]])
    assert patches.shape == (2, 2, 4, 4)
    assert torch.equal(patches[0, 0], expected)
    assert torch.equal(patches[1, 1], expected + 100)
    unpadded = patchify(x, patch_length=4, stride=3, pad_end=False)
    assert torch.equal(unpadded[0, 0], expected[:3])


def test_revin_statistics_and_round_trip():
    torch.manual_seed(0)
    revin = RevIN(3, affine=True)
    with torch.no_grad():
        revin.weight.copy_(torch.tensor([0.5, 2.0, -1.5]))
        revin.bias.copy_(torch.tensor([0.1, -0.3, 2.0]))
    x = torch.randn(4, 17, 3, dtype=torch.float64) * torch.tensor([1.0, 50.0, 0.01]) + torch.tensor([3.0, -7, 100])
    z, stats = RevIN(3, affine=False).normalize(x)
    torch.testing.assert_close(z.mean(dim=1), torch.zeros(4, 3, dtype=torch.float64))
    torch.testing.assert_close(stats.mean[:, 0], x.mean(dim=1))
    torch.testing.assert_close(stats.std[:, 0], torch.sqrt(x.var(dim=1, unbiased=False) + 1e-5))
    z, stats = revin.double().normalize(x)
    torch.testing.assert_close(revin.denormalize(z, stats), x)


def test_revin_of_a_constant_window_is_finite():
    z, stats = RevIN(2).normalize(torch.full((1, 8, 2), 4.0))
    assert torch.isfinite(z).all() and torch.equal(z, torch.zeros_like(z))


# --- PatchTST --------------------------------------------------------------------------------------------------


def test_residual_attention_matches_a_per_head_reference():
    torch.manual_seed(0)
    attention = ResidualAttention(d_model=8, n_heads=2).double().eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    previous = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    out, scores = attention(x, previous)
    q, k, v = attention.qkv(x).split(8, dim=-1)
    heads = []
    for h in range(2):
        span = slice(4 * h, 4 * h + 4)
        s = q[..., span] @ k[..., span].transpose(1, 2) / math.sqrt(4) + previous[:, h]
        torch.testing.assert_close(scores[:, h], s)
        heads.append(s.softmax(-1) @ v[..., span])
    torch.testing.assert_close(out, attention.out(torch.cat(heads, dim=-1)))


def test_encoder_layer_is_post_norm_with_batchnorm_over_batch_and_tokens():
    torch.manual_seed(0)
    layer = PatchTSTEncoderLayer(d_model=8, n_heads=2, d_ff=16, dropout=0.0).double().train()
    x = torch.randn(4, 6, 8, dtype=torch.float64)

    def batch_norm(y):  # training-mode BatchNorm1d over the features, statistics over batch and tokens
        mean = y.mean(dim=(0, 1))
        var = y.var(dim=(0, 1), unbiased=False)
        return (y - mean) / torch.sqrt(var + 1e-5)

    attended, _ = layer.attention(x)
    h = batch_norm(x + attended)
    expected = batch_norm(h + layer.feed_forward(h))
    out, _ = layer(x)
    torch.testing.assert_close(out, expected)


def test_patchtst_is_equivariant_to_per_window_shift_and_scale():
    torch.manual_seed(0)
    model = PatchTST(37, 7, 3, patch_length=8, patch_stride=5, d_model=16, n_heads=4, n_layers=2, d_ff=32)
    model = model.double().eval()
    with torch.no_grad():  # a non-trivial affine map, so the test also covers RevIN's inverse of it
        model.revin.weight.copy_(torch.tensor([0.7, 1.3, 2.0]))
        model.revin.bias.copy_(torch.tensor([0.2, -0.5, 1.0]))
    x = torch.randn(5, 37, 3, dtype=torch.float64)
    scale = torch.rand(5, 1, 3, dtype=torch.float64) * 20 + 0.5
    shift = torch.randn(5, 1, 3, dtype=torch.float64) * 100
    with torch.no_grad():
        torch.testing.assert_close(model(x * scale + shift), model(x) * scale + shift, rtol=1e-4, atol=1e-4)
        # without RevIN the property does not hold: the test above is not vacuous
        plain = PatchTST(37, 7, 3, patch_length=8, patch_stride=5, n_layers=2, revin=False).double().eval()
        assert not torch.allclose(plain(x * scale + shift), plain(x) * scale + shift, rtol=1e-2, atol=1e-2)


def test_patchtst_channels_are_independent_unless_mixed():
    torch.manual_seed(0)
    x = torch.randn(2, 24, 3)
    perturbed = x.clone()
    perturbed[:, :, 0] += torch.randn(2, 24)
    independent = PatchTST(24, 5, 3, patch_length=6, patch_stride=3, n_layers=1).eval()
    mixing = PatchTST(24, 5, 3, patch_length=6, patch_stride=3, n_layers=1, channel_independent=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(independent(x)[..., 1:], independent(perturbed)[..., 1:])
        assert not torch.allclose(independent(x)[..., 0], independent(perturbed)[..., 0])
        assert not torch.allclose(mixing(x)[..., 1:], mixing(perturbed)[..., 1:])


def test_patchtst_embeds_patches_and_flattens_d_major():
    """One layer-free path checked by hand: with the encoder replaced by the identity and RevIN off, the forecast
    is the head applied to (embedding(patches) + position) flattened as [D, N]."""
    torch.manual_seed(0)
    model = PatchTST(20, 4, 2, patch_length=4, patch_stride=4, d_model=8, n_heads=2, n_layers=1, revin=False).eval()
    model.layers = torch.nn.ModuleList()  # type: ignore[assignment]
    x = torch.randn(3, 20, 2)
    with torch.no_grad():
        out = model(x)
        for c in range(2):
            series = torch.cat([x[:, :, c], x[:, -1:, c].expand(3, 4)], dim=1)  # end padding: 4 copies
            patches = series.unfold(1, 4, 4)  # [B, 6, 4]
            tokens = model.embedding(patches) + model.position  # [B, N, D]
            expected = model.head(tokens.transpose(1, 2).reshape(3, -1))  # [B, H]
            torch.testing.assert_close(out[..., c], expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patch_length": 16, "patch_stride": 8},
        {"patch_length": 5, "patch_stride": 3},
        {"patch_length": 1, "patch_stride": 1},  # point tokens: N = L + 1
        {"patch_length": 7, "patch_stride": 7, "channel_independent": False, "residual_attention": False},
    ],
)
def test_patchtst_shapes_with_odd_lengths(kwargs):
    model = PatchTST(37, 7, 3, d_model=8, n_heads=2, n_layers=2, d_ff=16, **kwargs)
    out = model(torch.randn(5, 37, 3))
    assert out.shape == (5, 7, 3) and torch.isfinite(out).all()
    assert model.num_patches == num_patches(37, kwargs["patch_length"], kwargs["patch_stride"])


def test_models_reject_windows_of_the_wrong_size():
    with pytest.raises(ConfigError, match="built for windows of 37 steps x 3 channels, got 36 x 3"):
        PatchTST(37, 7, 3, d_model=8, n_heads=2)(torch.randn(1, 36, 3))
    with pytest.raises(ConfigError, match="context_length 37, got a window of 36"):
        DLinear(37, 7, 3)(torch.randn(1, 36, 3))
    with pytest.raises(ConfigError, match="divisible by n_heads"):
        PatchTST(37, 7, 3, d_model=10, n_heads=4)


@pytest.mark.parametrize("task_class", [DLinearTask, PatchTSTTask])
def test_tasks_train_a_step_on_odd_shapes(task_class):
    torch.manual_seed(0)
    task = task_class(num_channels=3, context_length=37, prediction_length=7)
    batch = {"past": torch.randn(4, 37, 3), "future": torch.randn(4, 7, 3)}
    loss = task.step(batch, "train")
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in task.parameters())
    assert task.hparams.context_length == 37
