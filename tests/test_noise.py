"""Noise mixing: SNR over each utterance's own samples, per-utterance draws, determinism."""

import numpy as np
import pytest
import soundfile
import torch
from ctsl_brain.noise import UtteranceAddNoise, snr_db


@pytest.fixture(scope="module")
def noise_csv(tmp_path_factory):
    """A bank of three non-stationary noise segments of different lengths and levels."""
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    rows = ["ID,duration,wav"]
    for i, seconds in enumerate([1.5, 2.0, 0.4]):
        n = int(seconds * 16000)
        envelope = 0.2 + np.abs(np.sin(np.linspace(0, 7 * (i + 1), n)))
        audio = (rng.normal(0, 0.1 * (i + 1), n) * envelope).astype(np.float32)
        soundfile.write(folder / f"n{i}.wav", audio, 16000, subtype="FLOAT")
        rows.append(f"n{i},{seconds},$noise_root/n{i}.wav")
    path = folder / "noise.csv"
    path.write_text("\n".join(rows) + "\n")
    return str(path), {"noise_root": str(folder)}


def _batch(lengths, seed=0):
    """Speech-like waveforms of very different levels, zero-padded to the longest."""
    generator = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        tone = torch.sin(torch.arange(n) * 0.05 * (i + 1))
        wavs[i, :n] = (
            tone + 0.3 * torch.randn(n, generator=generator)
        ) * 10.0 ** (-i)
    return wavs, torch.tensor(lengths, dtype=torch.float32) / max(lengths)


@pytest.mark.parametrize("snr", [0.0, 5.0, 10.0, -3.0])
def test_snr_holds_over_each_utterances_own_samples(noise_csv, snr):
    csv_file, replacements = noise_csv
    mixer = UtteranceAddNoise(
        csv_file, snr_low=snr, snr_high=snr, replacements=replacements
    )
    lengths = [32000, 20000, 6000, 1500]
    wavs, rel = _batch(lengths)
    noisy = mixer(wavs, rel)
    # AddNoise scales the speech by 1 - f, f = 1 / (10 ** (snr / 20) + 1).
    speech = wavs * (1 - 1 / (10 ** (snr / 20) + 1))
    achieved = snr_db(speech, noisy - speech, rel)
    assert (achieved - snr).abs().max().item() < 0.5, achieved
    for i, n in enumerate(lengths):
        assert torch.all(noisy[i, n:] == 0), "noise leaked into the padding"


def test_noise_covers_every_sample_of_lengths_that_truncation_would_cut(
    noise_csv,
):
    """Relative lengths times the padded length are not whole numbers in float32 (251 / 32000 *
    32000 is 250.99998): the noise must reach each utterance's last sample, and the SNR hold
    over its true length."""
    padded = 32000
    candidates = torch.arange(1000, padded)
    product = (candidates.float() / padded) * padded
    cut = candidates[product.long() != candidates]
    lengths = [padded, *cut[:: max(1, len(cut) // 6)][:6].tolist()]
    assert len(lengths) == 7 and all(
        torch.round(product[n - 1000]) == n for n in lengths[1:]
    )
    csv_file, replacements = noise_csv
    mixer = UtteranceAddNoise(csv_file, replacements=replacements, seed=3)
    wavs, rel = _batch(lengths)
    wavs = wavs / wavs.abs().amax(dim=1, keepdim=True)  # comparable levels
    noisy = mixer(wavs, rel)
    speech = (
        0.5 * wavs
    )  # 0 dB: AddNoise scales the speech by 1 - 1 / (10 ** 0 + 1)
    noise = noisy - speech
    for i, n in enumerate(lengths):
        assert noise[i, n - 1] != 0, (
            f"no noise on the last sample of a {n}-sample utterance"
        )
        assert torch.all(noisy[i, n:] == 0), "noise leaked into the padding"
    true_lengths = torch.tensor(lengths, dtype=torch.float64) / padded
    achieved = snr_db(speech, noise, true_lengths)
    assert achieved.abs().max().item() < 4e-4, achieved


def test_each_utterance_gets_its_own_noise(noise_csv):
    csv_file, replacements = noise_csv
    mixer = UtteranceAddNoise(csv_file, replacements=replacements)
    torch.manual_seed(0)
    wavs = torch.ones(8, 4000).repeat(1, 1) * torch.sin(torch.arange(4000.0))
    noise = mixer(wavs, torch.ones(8)) - 0.5 * wavs
    distinct = {tuple(np.round(row[:50].numpy(), 6)) for row in noise}
    assert len(distinct) == 8, "utterances of a batch shared a noise excerpt"
    again = mixer(wavs, torch.ones(8)) - 0.5 * wavs
    assert not torch.allclose(noise, again), "noise was not redrawn"


def test_seeded_mixer_repeats_after_reset(noise_csv):
    csv_file, replacements = noise_csv
    mixer = UtteranceAddNoise(
        csv_file, snr_low=0, snr_high=10, replacements=replacements, seed=123
    )
    wavs, rel = _batch([16000, 8000])
    first = [mixer(wavs, rel), mixer(wavs, rel)]
    torch.manual_seed(99)  # the global generator must not matter
    mixer.reset()
    second = [mixer(wavs, rel), mixer(wavs, rel)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], first[1])


def test_noise_shorter_than_the_utterance_is_looped(noise_csv):
    csv_file, replacements = noise_csv
    mixer = UtteranceAddNoise(csv_file, replacements=replacements, seed=0)
    wavs, rel = _batch([64000])  # 4 s, longer than every noise segment
    noisy = mixer(wavs, rel)
    noise = noisy - 0.5 * wavs
    assert noise[0, -16000:].abs().sum() > 0


def test_noise_at_another_sample_rate_is_refused(tmp_path):
    soundfile.write(
        tmp_path / "n.wav", np.zeros(8000, dtype=np.float32) + 0.1, 8000
    )
    (tmp_path / "noise.csv").write_text(
        f"ID,duration,wav\nn,1.0,{tmp_path}/n.wav\n"
    )
    mixer = UtteranceAddNoise(str(tmp_path / "noise.csv"))
    with pytest.raises(ValueError, match=r"row n: .*8000 Hz.*16000 Hz"):
        mixer(torch.randn(1, 1000), torch.ones(1))
