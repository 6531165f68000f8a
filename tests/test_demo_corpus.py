"""Tests for the embedded synthetic emotional-speech corpus (``ctsl_brain.demo.corpus``).

Besides the file-format contract (headers, IDs, durations, label grid, speaker-disjoint
splits, disjoint noise banks, determinism, caching), this checks that the corpus is a
meaningful stand-in for the real task: a small, independent acoustic-feature baseline
(autocorrelation pitch, energy modulation, spectral tilt, ...) fitted by least squares must
predict the labels of unseen speakers from clean audio, and must do clearly worse when the
test utterances are mixed with the test noise bank at 0 dB SNR.
"""

import csv
import json
import os

import numpy as np
import pytest
import soundfile as sf
from ctsl_brain.demo.corpus import (
    MANIFEST_HEADER,
    NOISE_HEADER,
    prepare_demo_corpus,
)

SMALL = {
    "n_train": 24,
    "n_dev": 6,
    "n_test": 12,
    "adapt_noise_minutes": 0.3,
    "test_noise_minutes": 0.2,
    "seed": 7,
}
# Large enough for a least-squares baseline over ~17 features, small enough for CI.
LEARN = {
    "n_train": 200,
    "n_dev": 8,
    "n_test": 100,
    "adapt_noise_minutes": 0.2,
    "test_noise_minutes": 1.0,
    "seed": 11,
}
TINY_NOISE = {
    "adapt_noise_minutes": 0.1,
    "test_noise_minutes": 0.1,
    "field_minutes": 1.0,
}
ATTRIBUTES = ("arousal", "dominance", "valence")


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = tuple(next(reader))
        return header, [dict(zip(header, row, strict=True)) for row in reader]


def resolve(wav, data_folder):
    return wav.replace("$data_root", str(data_folder))


def all_files(data_folder):
    """Relative paths of every regular file under ``data_folder``."""
    found = []
    for root, _, files in os.walk(data_folder):
        found += [
            os.path.relpath(os.path.join(root, f), data_folder) for f in files
        ]
    return sorted(found)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_small")
    return folder, prepare_demo_corpus(folder, **SMALL)


@pytest.fixture(scope="module")
def learn_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_learn")
    return folder, prepare_demo_corpus(folder, **LEARN)


# --------------------------------------------------------------------------- format contract


def test_returned_paths_and_layout(small_corpus):
    folder, paths = small_corpus
    assert set(paths) == {"train", "dev", "test", "noise_adapt", "noise_test"}
    for path in paths.values():
        assert isinstance(path, str)
        assert os.path.isfile(path)
        assert os.path.dirname(path) == str(folder)
    assert os.path.isfile(os.path.join(folder, "demo_corpus.json"))
    # No temporary files are left behind by the atomic writes.
    assert not [f for f in all_files(folder) if f.endswith(".tmp")]


def test_manifests(small_corpus):
    folder, paths = small_corpus
    speakers, ids = {}, set()
    longest = 0.0
    for split, size in (("train", 24), ("dev", 6), ("test", 12)):
        header, rows = read_csv(paths[split])
        assert header == MANIFEST_HEADER
        assert len(rows) == size
        speakers[split] = {row["spk_id"] for row in rows}
        for row in rows:
            assert row["ID"] not in ids
            ids.add(row["ID"])
            assert row["wav"] == f"$data_root/wav/{split}/{row['ID']}.wav"
            info = sf.info(resolve(row["wav"], folder))
            assert info.samplerate == 16000 and info.channels == 1
            assert info.subtype == "PCM_16"
            assert abs(float(row["duration"]) - info.frames / 16000) < 1e-3
            assert 1.5 - 1e-3 <= float(row["duration"]) <= 3.5 + 1e-3
            longest = max(longest, info.frames / 16000)
            for name in ATTRIBUTES:
                value = float(row[name])
                assert 1.0 <= value <= 7.0
                assert abs(value * 5 - round(value * 5)) < 1e-6
                assert len(row[name].split(".")[-1]) <= 1
            assert row["spk_id"].startswith("spk")
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    assert len(speakers["train"]) == 16


def test_audio_is_not_clipped(small_corpus):
    folder, paths = small_corpus
    _, rows = read_csv(paths["train"])
    for row in rows[:10]:
        audio, _ = sf.read(resolve(row["wav"], folder))
        assert 0.1 < np.max(np.abs(audio)) <= 0.51
        assert np.std(audio) > 0.01


def test_noise_banks(small_corpus):
    folder, paths = small_corpus
    longest = max(
        float(row["duration"])
        for split in ("train", "dev", "test")
        for row in read_csv(paths[split])[1]
    )
    banks = {}
    for bank, minutes in (("adapt", 0.3), ("test", 0.2)):
        header, rows = read_csv(paths[f"noise_{bank}"])
        assert header == NOISE_HEADER
        banks[bank] = [row["ID"] for row in rows]
        assert len(set(banks[bank])) == len(rows)
        assert (
            sum(float(row["duration"]) for row in rows) >= minutes * 60 - 1e-6
        )
        for row in rows:
            assert row["wav"] == f"$data_root/noise/{bank}/{row['ID']}.wav"
            info = sf.info(resolve(row["wav"], folder))
            assert info.samplerate == 16000 and info.channels == 1
            assert info.subtype == "PCM_16"
            assert abs(float(row["duration"]) - info.frames / 16000) < 1e-3
            assert info.frames / 16000 > longest
    assert not set(banks["adapt"]) & set(banks["test"])
    # Different recordings: no segment of one bank shares audio with a segment of the other.
    audio = {
        bank: [
            sf.read(resolve(f"$data_root/noise/{bank}/{i}.wav", folder))[0]
            for i in ids
        ]
        for bank, ids in banks.items()
    }
    for x in audio["adapt"]:
        for y in audio["test"]:
            assert abs(np.corrcoef(x, y)[0, 1]) < 0.3


def test_noise_is_non_stationary(small_corpus):
    folder, paths = small_corpus
    _, rows = read_csv(paths["noise_adapt"])
    audio, _ = sf.read(resolve(rows[0]["wav"], folder))
    frames = audio[: len(audio) // 1600 * 1600].reshape(-1, 1600)
    level_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    assert np.ptp(level_db) > 3.0


def test_field_recordings_have_known_speech_over_the_places_noise(small_corpus):
    """The field recordings: 60 s each, their speech intervals listed, each utterance well
    above the noise around it, pauses of 2 to 10 s between turns."""
    folder, _ = small_corpus
    _, rows = read_csv(folder / "field_speech.csv")
    by_file = {}
    for row in rows:
        by_file.setdefault(row["file"], []).append(
            (float(row["start"]), float(row["end"]))
        )
    assert len(by_file) == 5  # 5 minutes, the default
    for rel, spans in by_file.items():
        audio, rate = sf.read(folder / rel)
        assert len(audio) == 60 * rate
        speech = np.zeros(len(audio), bool)
        for start, end in spans:
            assert 1.5 <= end - start <= 3.5
            speech[round(start * rate) : round(end * rate)] = True
        pauses = [b[0] - a[1] for a, b in zip(spans, spans[1:], strict=False)]
        assert min(pauses) >= 2.0 - 1e-3 and max(pauses) <= 10.0 + 1e-3
        level = 10 * np.log10(
            np.mean(audio[speech] ** 2) / np.mean(audio[~speech] ** 2)
        )
        assert level > 5.0, rel
        assert 0.15 < speech.mean() < 0.5


# ----------------------------------------------------------------- determinism and caching


def test_deterministic(tmp_path):
    options = {"n_train": 6, "n_dev": 2, "n_test": 3, **TINY_NOISE}
    a, b = tmp_path / "a", tmp_path / "b"
    prepare_demo_corpus(a, **options)
    prepare_demo_corpus(b, **options)
    files = all_files(a)
    assert files == all_files(b)
    assert (
        len([f for f in files if f.endswith(".wav")]) == 6 + 2 + 3 + 2 * 2 + 1
    )
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # Another seed gives another corpus.
    c = tmp_path / "c"
    prepare_demo_corpus(c, seed=99, **options)
    assert (a / "train.csv").read_bytes() != (c / "train.csv").read_bytes()


def test_a_generation_stopped_half_way_ends_with_the_same_files(
    tmp_path, monkeypatch
):
    """Stopped while it writes its audio (a kill), the same call finishes it: the folder then
    holds exactly the files of an uninterrupted generation, byte for byte, and no temporary
    file."""
    from ctsl_brain.demo import corpus as demo_corpus

    options = {"n_train": 6, "n_dev": 2, "n_test": 3, **TINY_NOISE}
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    prepare_demo_corpus(whole, **options)
    written = []
    real_write = demo_corpus.write_audio_atomic

    def stopping_write(path, *args, **kwargs):
        if len(written) == 7:
            raise KeyboardInterrupt
        written.append(path)
        real_write(path, *args, **kwargs)

    monkeypatch.setattr(demo_corpus, "write_audio_atomic", stopping_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_demo_corpus(cut, **options)
    monkeypatch.undo()
    assert not os.path.exists(cut / "demo_corpus.json"), (
        "a stopped generation looked complete"
    )
    # What a kill during a write leaves: the temporary file of a process that is gone.
    dead = 2**22 + 12345  # above Linux' default pid_max: no process has this id
    (cut / "wav" / "train" / f".train_00003.wav.{dead}.tmp").write_bytes(
        b"RIFF cut sh"
    )
    prepare_demo_corpus(cut, **options)
    assert all_files(cut) == all_files(whole)
    for rel in all_files(whole):
        assert (cut / rel).read_bytes() == (whole / rel).read_bytes(), rel


def test_items_do_not_depend_on_corpus_size(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    prepare_demo_corpus(small, n_train=3, n_dev=1, n_test=1, **TINY_NOISE)
    prepare_demo_corpus(large, n_train=5, n_dev=2, n_test=2, **TINY_NOISE)
    rows_small = read_csv(small / "train.csv")[1]
    rows_large = read_csv(large / "train.csv")[1]
    assert rows_small == rows_large[:3]
    for rel in ("wav/train/train_00002.wav", "wav/test/test_00000.wav"):
        assert (small / rel).read_bytes() == (large / rel).read_bytes()


def test_skips_when_up_to_date_and_regenerates_on_change(tmp_path):
    options = {"n_train": 4, "n_dev": 2, "n_test": 2, **TINY_NOISE}
    first = prepare_demo_corpus(tmp_path, **options)
    files = all_files(tmp_path)
    mtimes = {f: os.stat(tmp_path / f).st_mtime_ns for f in files}
    second = prepare_demo_corpus(tmp_path, **options)
    assert second == first
    assert all_files(tmp_path) == files
    assert {f: os.stat(tmp_path / f).st_mtime_ns for f in files} == mtimes

    # A missing file triggers regeneration.
    os.remove(tmp_path / "wav" / "dev" / "dev_00001.wav")
    prepare_demo_corpus(tmp_path, **options)
    assert os.path.isfile(tmp_path / "wav" / "dev" / "dev_00001.wav")

    # Changed options regenerate the manifests.
    prepare_demo_corpus(tmp_path, **{**options, "n_train": 5})
    assert len(read_csv(tmp_path / "train.csv")[1]) == 5
    with open(tmp_path / "demo_corpus.json", encoding="utf-8") as f:
        assert json.load(f)["n_train"] == 5


def test_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError):
        prepare_demo_corpus(tmp_path, min_duration=3.0, max_duration=2.0)
    with pytest.raises(ValueError):
        prepare_demo_corpus(tmp_path, noise_segment_seconds=2.0)
    with pytest.raises(ValueError):
        prepare_demo_corpus(tmp_path, seed=-1)


# ------------------------------------------------------------------------------ learnability


def ccc(pred, gold):
    """Concordance correlation coefficient with population (co)variances."""
    pred, gold = np.asarray(pred, float), np.asarray(gold, float)
    mp, mg = pred.mean(), gold.mean()
    cov = np.mean((pred - mp) * (gold - mg))
    return 2 * cov / (pred.var() + gold.var() + (mp - mg) ** 2)


def acoustic_features(audio, sr=16000):
    """A small hand-crafted feature vector, independent of the synthesiser's internals.

    The waveform is normalised to zero mean and unit variance first, as the neural model does,
    so absolute loudness is unavailable. Frames: 32 ms, hop 10 ms.
    """
    x = (audio - audio.mean()) / (audio.std() + 1e-9)
    win_len, n_fft, hop = 600, 1024, 160
    x = np.pad(x, (0, max(0, win_len - len(x))))
    window = np.hanning(win_len)
    frames = (
        np.lib.stride_tricks.sliding_window_view(x, win_len)[::hop] * window
    )
    power = (
        np.abs(np.fft.rfft(frames, n=n_fft)) ** 2
    )  # zero-padded: linear autocorrelation
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    energy_db = 10 * np.log10(power.sum(axis=1) + 1e-9)
    active = energy_db > energy_db.max() - 30

    # Pitch by normalised autocorrelation in 70-450 Hz, corrected for the window's own
    # autocorrelation so that long lags (low voices) are not penalised (Boersma, 1993).
    acf = np.fft.irfft(power, axis=1)[:, :win_len]
    window_acf = np.fft.irfft(np.abs(np.fft.rfft(window, n=n_fft)) ** 2)[
        :win_len
    ]
    acf = acf / (acf[:, :1] + 1e-9) / (window_acf / window_acf[0])
    lo, hi = sr // 450, sr // 70
    # A small octave cost favours the shortest period among near-equal peaks (subharmonics).
    lags = np.arange(lo, hi)
    lag = lo + np.argmax(acf[:, lo:hi] - 0.05 * np.log2(lags / lo), axis=1)
    peak = acf[np.arange(len(acf)), lag]
    voiced = active & (peak > 0.5)
    if voiced.sum() < 5:
        voiced = active
    semitones = 12 * np.log2(sr / lag)
    st = semitones[voiced]
    n_tail = max(2, len(st) // 5)
    jumps = np.abs(np.diff(semitones))[voiced[1:] & voiced[:-1]]

    # Spectral shape of voiced frames.
    spec = power[voiced].mean(axis=0)

    def band(f_lo, f_hi):
        return spec[(freqs >= f_lo) & (freqs < f_hi)].sum() + 1e-9

    low = (freqs >= 200) & (freqs < 3000)
    centroid_low = (spec[low] * freqs[low]).sum() / (spec[low].sum() + 1e-9)
    centroid = (spec * freqs).sum() / (spec.sum() + 1e-9)
    mid = (freqs >= 800) & (freqs < 2800)
    centroid_mid = (spec[mid] * freqs[mid]).sum() / (spec[mid].sum() + 1e-9)

    # Rhythm: modulation spectrum of the energy contour (syllable rate ~ 2-8 Hz).
    env = np.clip(energy_db - energy_db.max() + 40, 0, None)
    span = np.flatnonzero(active)
    env = env[span[0] : span[-1] + 1]
    mod = np.abs(np.fft.rfft(env - env.mean(), n=1024)) ** 2
    mod_f = np.fft.rfftfreq(1024, hop / sr)
    sel = (mod_f > 1) & (mod_f < 12)
    mod_centroid = (mod[sel] * mod_f[sel]).sum() / (mod[sel].sum() + 1e-9)
    rising = np.sum(np.diff((env > 0.5 * env.max()).astype(int)) == 1) / (
        len(env) * hop / sr
    )

    zcr = np.mean(np.abs(np.diff(np.sign(x))) > 0)
    e_voiced = energy_db[voiced]
    return np.array(
        [
            np.median(st),
            np.std(st),
            np.percentile(st, 90) - np.percentile(st, 10),
            np.mean(st[-n_tail:]) - np.median(st),
            np.median(jumps) if len(jumps) else 0.0,
            np.mean(peak[voiced]),
            voiced.mean(),
            active[span[0] : span[-1] + 1].mean(),
            mod_centroid,
            rising,
            10 * np.log10(band(2000, 5000) / band(0, 1000)),
            10 * np.log10(band(4000, 8000) / band(0, 4000)),
            centroid,
            centroid_low,
            centroid_mid,
            zcr,
            np.std(e_voiced),
            np.percentile(e_voiced, 95) - np.percentile(e_voiced, 50),
        ]
    )


def fit_predict(train_x, train_y, test_x, ridge=1e-2):
    """Standardise, then ridge-regularised linear least squares with an intercept."""
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-9
    a = np.hstack([(train_x - mean) / std, np.ones((len(train_x), 1))])
    b = np.hstack([(test_x - mean) / std, np.ones((len(test_x), 1))])
    reg = ridge * len(a) * np.eye(a.shape[1])
    reg[-1, -1] = 0.0
    coef = np.linalg.solve(a.T @ a + reg, a.T @ train_y)
    return b @ coef


def mix_at_snr(speech, noise, snr_db, rng):
    """Add a random excerpt of ``noise`` at ``snr_db`` (RMS over the utterance's own samples)."""
    start = rng.integers(0, len(noise) - len(speech) + 1)
    excerpt = noise[start : start + len(speech)]
    gain = np.sqrt(
        np.mean(speech**2) / (np.mean(excerpt**2) + 1e-12) / 10 ** (snr_db / 10)
    )
    return speech + gain * excerpt


def learnability(folder, paths, snr_db=0.0, seed=0):
    """CCCs per attribute of the feature baseline: clean, and 0 dB test (clean-trained and
    noisy-trained)."""
    rng = np.random.default_rng(seed)
    noises = [
        sf.read(resolve(r["wav"], folder))[0]
        for r in read_csv(paths["noise_test"])[1]
    ]
    data = {}
    for split in ("train", "test"):
        rows = read_csv(paths[split])[1]
        feats, noisy, labels = [], [], []
        for row in rows:
            audio = sf.read(resolve(row["wav"], folder))[0]
            mixed = mix_at_snr(
                audio, noises[rng.integers(len(noises))], snr_db, rng
            )
            feats.append(acoustic_features(audio))
            noisy.append(acoustic_features(mixed))
            labels.append([float(row[a]) for a in ATTRIBUTES])
        data[split] = (np.array(feats), np.array(noisy), np.array(labels))
    (tr_clean, tr_noisy, tr_y), (te_clean, te_noisy, te_y) = (
        data["train"],
        data["test"],
    )
    result = {}
    for name, train_x, test_x in (
        ("clean", tr_clean, te_clean),
        ("noisy", tr_clean, te_noisy),
        ("noisy_matched", tr_noisy, te_noisy),
    ):
        pred = fit_predict(train_x, tr_y, test_x)
        result[name] = {
            a: ccc(pred[:, i], te_y[:, i]) for i, a in enumerate(ATTRIBUTES)
        }
    return result


@pytest.mark.slow
def test_labels_are_learnable_and_masked_by_noise(learn_corpus):
    folder, paths = learn_corpus
    result = learnability(folder, paths)
    clean, noisy, matched = (
        result["clean"],
        result["noisy"],
        result["noisy_matched"],
    )
    print(
        {
            k: {a: round(float(v), 3) for a, v in r.items()}
            for k, r in result.items()
        }
    )
    assert clean["arousal"] >= 0.7
    assert clean["dominance"] >= 0.3
    assert clean["valence"] >= 0.3
    # 0 dB radio noise must genuinely mask the cues, with or without noisy training data.
    for attr in ATTRIBUTES:
        assert noisy[attr] < clean[attr] - 0.1
    assert np.mean(list(matched.values())) < np.mean(list(clean.values())) - 0.1


@pytest.mark.slow
def test_label_distribution(learn_corpus):
    _, paths = learn_corpus
    y = np.array(
        [[float(r[a]) for a in ATTRIBUTES] for r in read_csv(paths["train"])[1]]
    )
    assert np.all(np.abs(y.mean(axis=0) - 4.0) < 0.4)
    assert np.all((y.std(axis=0) > 0.8) & (y.std(axis=0) < 1.4))
    # Arousal and dominance are correlated, as in annotated corpora.
    assert 0.35 < np.corrcoef(y[:, 0], y[:, 1])[0, 1] < 0.8


def test_what_is_said_follows_valence():
    """Vowels are drawn uniformly for neutral valence, front vowels (high F2) more often the more
    positive the utterance, back vowels the more negative."""
    from ctsl_brain.demo.speech import VOWELS, vowel_probabilities

    np.testing.assert_allclose(
        vowel_probabilities(0.0), np.full(len(VOWELS), 1 / len(VOWELS))
    )
    valences = np.linspace(-1.0, 1.0, 9)
    probs = np.array([vowel_probabilities(v) for v in valences])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    mean_f2 = probs @ VOWELS[:, 1]
    assert np.all(np.diff(mean_f2) > 0)
    # At the extremes the favoured vowel is several times likelier than the disfavoured one.
    i, u = 0, 5
    assert probs[-1, i] > 5 * probs[-1, u] and probs[0, u] > 5 * probs[0, i]


def test_cli(tmp_path, capsys):
    from recipes.demo.generate_corpus import main

    main(
        [
            str(tmp_path),
            "--seed",
            "3",
            "--n_train",
            "2",
            "--n_dev",
            "1",
            "--n_test",
            "1",
            "--adapt_noise_minutes",
            "0.05",
            "--test_noise_minutes",
            "0.05",
        ]
    )
    assert str(tmp_path) in capsys.readouterr().out
    assert len(read_csv(tmp_path / "train.csv")[1]) == 2
    assert len(read_csv(tmp_path / "noise_test.csv")[1]) == 1
