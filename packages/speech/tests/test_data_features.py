"""Features: fbank framing and spectrum, LFR against hand-computed stacks and a naive loop, CMVN statistics,
SpecAugment's mask geometry."""

import math

import pytest
import torch

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.speech.data.features import GlobalCMVN, SpecAugment, fbank, lfr


def test_fbank_frames_and_tone_peak():
    seconds = torch.arange(12_345) / 16_000
    tone = 0.5 * torch.sin(2 * math.pi * 1000 * seconds)  # 1 kHz
    features = fbank(tone)
    assert features.shape == (1 + (12_345 - 400) // 160, 80)  # 25 ms windows every 10 ms, snip_edges
    # the loudest mel bin is the one whose centre is nearest 1 kHz (mel scale 1127 ln(1 + f / 700), 20 Hz-8 kHz)
    mel = lambda f: 1127 * math.log(1 + f / 700)  # noqa: E731
    centres = [mel(20) + (i + 1) * (mel(8000) - mel(20)) / 81 for i in range(80)]
    expected = min(range(80), key=lambda i: abs(centres[i] - mel(1000)))
    assert features.mean(0).argmax().item() == expected


def test_fbank_is_log_power():
    waveform = 0.1 * torch.randn(4000, generator=torch.Generator().manual_seed(0))
    # doubling the amplitude multiplies the power by 4: every log-mel value grows by ln 4
    assert torch.allclose(fbank(2 * waveform) - fbank(waveform), torch.full((23, 80), math.log(4)), atol=1e-3)


def test_fbank_of_too_short_audio_is_empty():
    assert fbank(torch.zeros(399)).shape == (0, 80)
    with pytest.raises(ConfigError):
        fbank(torch.zeros(2, 800))


def test_lfr_hand_computed():
    frames = torch.arange(10.0).unsqueeze(1)  # [10, 1], frame t holds t
    # (7 - 1) // 2 = 3 copies of frame 0 in front; ceil(10 / 6) = 2 outputs
    assert lfr(frames, 7, 6).tolist() == [[0, 0, 0, 0, 1, 2, 3], [3, 4, 5, 6, 7, 8, 9]]
    # T = 13: a third window starts at padded row 12 = frame 9 and runs past the end: frame 12 repeats
    assert lfr(torch.arange(13.0).unsqueeze(1), 7, 6)[2].tolist() == [9, 10, 11, 12, 12, 12, 12]
    # frames are concatenated whole, in time order: [T, F] -> [T', m * F]
    two = torch.tensor([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]])
    assert lfr(two, 3, 2).tolist() == [[0, 10, 0, 10, 1, 11], [1, 11, 2, 12, 2, 12]]
    assert lfr(frames, 1, 1).equal(frames)


def naive_lfr(features: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """Pad (m - 1) // 2 copies of the first frame in front, then step n: a full window, or the rest padded with
    the last frame."""
    padded = [features[0]] * ((m - 1) // 2) + list(features)
    rows = []
    for i in range(math.ceil(features.shape[0] / n)):
        window = padded[i * n : i * n + m]
        window += [features[-1]] * (m - len(window))
        rows.append(torch.cat(window))
    return torch.stack(rows)


@pytest.mark.parametrize("frames", [1, 2, 5, 6, 7, 12, 13, 50, 97])
@pytest.mark.parametrize(("m", "n"), [(7, 6), (5, 3), (4, 4), (1, 2), (3, 1)])
def test_lfr_matches_naive_loop(frames, m, n):
    features = torch.randn(frames, 3)
    assert lfr(features, m, n).equal(naive_lfr(features, m, n))


def test_cmvn_statistics_and_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(0)
    parts = [torch.randn(t, 4, generator=generator) * torch.tensor([1.0, 2, 3, 0]) + 5 for t in (3, 17, 40)]
    cmvn = GlobalCMVN.fit(parts)
    everything = torch.cat(parts)  # [60, 4]
    assert torch.allclose(cmvn.mean, everything.mean(0), atol=1e-5)
    assert torch.allclose(cmvn.std[:3], everything[:, :3].std(0, unbiased=False), atol=1e-5)
    assert cmvn.std[3].item() == pytest.approx(1e-5)  # a constant dimension is floored, not divided by 0
    normalized = cmvn(everything)
    assert torch.allclose(normalized[:, :3].mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(normalized[:, :3].std(0, unbiased=False), torch.ones(3), atol=1e-5)
    cmvn.save(tmp_path / "cmvn.pt")
    loaded = GlobalCMVN.load(tmp_path / "cmvn.pt")
    assert loaded.mean.equal(cmvn.mean) and loaded.std.equal(cmvn.std)


def test_cmvn_errors(tmp_path):
    with pytest.raises(DataError, match="without frames"):
        GlobalCMVN.fit([torch.zeros(0, 3)])
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="bad.pt"):
        GlobalCMVN.load(tmp_path / "bad.pt")


def test_spec_augment_masks_one_band_in_every_stacked_frame():
    torch.manual_seed(0)
    augment = SpecAugment(freq_mask_width=20, num_freq_masks=1, time_mask_width=0, num_time_masks=0, stack=7)
    features = torch.randn(30, 7 * 10) + 10  # no natural zeros
    found_mask = False
    for _ in range(20):
        zero = augment(features).reshape(30, 7, 10) == 0  # [T, m, F]
        band = zero[0, 0]  # the masked mel bins
        assert zero.equal(band.expand(30, 7, 10))  # the same bins in every frame and every stacked frame
        bins = band.nonzero().flatten().tolist()
        assert bins == list(range(bins[0], bins[0] + len(bins))) if bins else True  # contiguous
        found_mask |= bool(bins)
    assert found_mask


def test_spec_augment_time_masks_are_contiguous_and_bounded():
    torch.manual_seed(0)
    augment = SpecAugment(freq_mask_width=0, num_freq_masks=0, time_mask_width=50, num_time_masks=1, stack=2)
    features = torch.randn(40, 8) + 10
    for _ in range(20):
        masked = augment(features)
        rows = (masked == 0).all(1).nonzero().flatten().tolist()
        assert (masked == 0).sum() == len(rows) * 8  # whole frames only
        assert len(rows) <= 0.2 * 40  # at most max_time_fraction of the frames
        assert rows == list(range(rows[0], rows[0] + len(rows))) if rows else True
    assert SpecAugment(0, 0, 0, 0).forward(features).equal(features)
