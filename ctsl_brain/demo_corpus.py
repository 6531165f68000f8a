"""An embedded, deterministic, synthetic emotional-speech corpus with radio-like noise.

Why this exists
---------------
The recipe adapts a speech-emotion-recognition model (arousal, dominance, valence regression,
as in MSP-Podcast) to noisy conditions, using recorded radio shows as adaptation noise. Those
corpora are licensed and large, so tests, CI and first-time users need a stand-in that ships
with the code, builds in seconds on a laptop CPU and behaves qualitatively like the real task:

* the labels must be *learnable from the waveform*, through cues that survive per-utterance
  mean/variance normalisation (pitch level and range, speaking rate, pause time, spectral tilt,
  formant positions, phrase-final contour, breathiness, stress contrast), and
* the noise must genuinely mask those cues at low SNR, with a disjoint bank for adaptation and
  for testing, as the paper's protocol requires.

What it is
----------
Utterances of a source-filter synthesiser whose prosody and voice quality follow three
emotional attributes (arousal, dominance, valence on the 1-7 scale, rounded to multiples of
0.2 like the mean of five raters), spoken by synthetic speakers: see
:mod:`ctsl_brain.demo_speech` for what each attribute changes. Splits are speaker-disjoint.
Each utterance is scaled to a peak of 0.5 times a loudness gain weakly tied to arousal.

Noise banks imitate radio shows: each "recording" mixes babble (4-8 voices of the same
synthesiser, from voices outside every corpus split), music (chords, bass line, drums) and
sound effects (filtered bursts, chirps, applause, hum) with smoothly time-varying weights, and
is cut into segments slightly longer than the longest utterance, listed in SpeechBrain's
``AddNoise`` CSV format. The adaptation and test banks come from different random streams,
recordings and babble voices.

Everything is drawn from ``numpy.random.default_rng`` streams keyed by
``(seed, stream kind, split, index)``, so every file is a pure function of the options and its
own index, and the same options give byte-identical files.
"""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

from ctsl_brain.data import (
    SettingsError,
    remove_stale_staging,
    write_audio_atomic,
    write_csv_atomic,
    write_text_atomic,
)
from ctsl_brain.demo_speech import (
    Voice,
    bandpass,
    draw_labels,
    draw_voice,
    rms,
    synthesize_speech,
    white,
)

__all__ = [
    "CORPUS_VERSION",
    "MANIFEST_HEADER",
    "NOISE_HEADER",
    "SPEAKERS_PER_SPLIT",
    "prepare_demo_corpus",
]

# Bump whenever the synthesis changes, so that caches built by older code are regenerated.
CORPUS_VERSION = 4

MANIFEST_HEADER = ("ID", "wav", "duration", "arousal", "dominance", "valence", "spk_id")
NOISE_HEADER = ("ID", "duration", "wav")
OPTIONS_FILE = "demo_corpus.json"

SPEAKERS_PER_SPLIT = {"train": 16, "dev": 4, "test": 6}
_SPLITS = ("train", "dev", "test")
_NOISE_BANKS = ("adapt", "test")

# Codes mixed into the seed so that every split / bank has its own independent streams.
_SPLIT_CODE = {"train": 1, "dev": 2, "test": 3}
_BANK_CODE = {"adapt": 11, "test": 12}
# Stream kinds: each random quantity family gets its own stream.
_STREAM_SPEAKER = 1
_STREAM_UTTERANCE = 2
_STREAM_RECORDING = 3
_STREAM_BABBLE_VOICE = 4

# Babble voices per noise bank; each recording draws 4-8 of them, with emotions of half the
# corpus' spread around the neutral middle.
_BABBLE_POOL = 12
_BABBLE_EMOTION_SPREAD = 0.5
# Segments cut from one synthetic recording; several recordings make a bank.
_SEGMENTS_PER_RECORDING = 6

# One period of a harmonic tone for music and hum (see ``_tone``).
_TONE_TABLE = sum(0.6**h * np.sin(2.0 * np.pi * (h + 1) * np.arange(4096) / 4096) for h in range(5))


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for one item, so items do not depend on generation order."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _peak_normalise(x: np.ndarray, peak: float) -> np.ndarray:
    return x * (peak / max(float(np.max(np.abs(x))), 1e-12))


def _smooth_weights(
    rng: np.random.Generator,
    n_samples: int,
    sample_rate: int,
    low: float,
    high: float,
    p_off: float,
) -> np.ndarray:
    """A non-negative gain curve with knots every 1-3 s; with probability ``p_off`` a knot is 0,
    so a component fades out for a while (a radio show alternates talk, music and jingles)."""
    times = [0.0]
    while times[-1] * sample_rate < n_samples:
        times.append(times[-1] + rng.uniform(1.0, 3.0))
    values = rng.uniform(low, high, size=len(times))
    values[rng.random(len(times)) < p_off] = 0.0
    return np.interp(np.arange(n_samples) / sample_rate, times, values)


def _babble(
    rng: np.random.Generator, voices: list[Voice], n_samples: int, sample_rate: int
) -> np.ndarray:
    """A crowd of simultaneous talkers of the corpus synthesiser, with random but moderate
    emotions (half the spread of the corpus' labels): a few full-range emotional talkers at the
    target's level would carry valence cues of their own that no model can tell apart from the
    target's."""
    sr = sample_rate
    out = np.zeros(n_samples)
    n_talkers = int(rng.integers(4, 9))
    for idx in rng.choice(len(voices), size=n_talkers, replace=False):
        level = rng.uniform(0.5, 1.0)
        pos = -int(rng.uniform(0.0, 2.0) * sr)  # talkers are not synchronised
        while pos < n_samples:
            n = int(rng.uniform(1.5, 4.0) * sr)
            labels = 4.0 + _BABBLE_EMOTION_SPREAD * (draw_labels(rng) - 4.0)
            utt = synthesize_speech(rng, voices[idx], labels, n_samples=n, sample_rate=sr)
            utt *= level / rms(utt)
            lo, hi = max(pos, 0), min(pos + n, n_samples)
            if hi > lo:
                out[lo:hi] += utt[lo - pos : hi - pos]
            pos += n + int(rng.uniform(0.05, 0.5) * sr)
    return out


def _tone(phase: np.ndarray) -> np.ndarray:
    """A harmonic tone (5 harmonics, -4.4 dB each) read from a wavetable at ``phase`` (cycles,
    non-negative); a table lookup is an order of magnitude cheaper than summing sines."""
    return _TONE_TABLE[(phase * _TONE_TABLE.size).astype(np.int64) & (_TONE_TABLE.size - 1)]


def _music(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """Chords of harmonic tones changing every 0.3-1 s over a bass line, with drums."""
    sr = sample_rate
    out = np.zeros(n_samples)
    key = int(rng.integers(45, 57))
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    pos = 0
    while pos < n_samples:
        n = min(int(rng.uniform(0.3, 1.0) * sr), n_samples - pos)
        t = np.arange(n) / sr
        root = key + int(scale[rng.integers(len(scale))])
        intervals = [0, 4, 7] if rng.random() < 0.6 else [0, 3, 7]
        if rng.random() < 0.3:
            intervals.append(10)
        chord = np.zeros(n)
        for note in intervals:  # the chord sits an octave above the key
            chord += _tone(440.0 * 2.0 ** ((root + 12 + note - 69) / 12.0) * t + rng.random())
        bass = _tone(440.0 * 2.0 ** ((root - 12 - 69) / 12.0) * t)
        env = np.minimum(1.0, t / 0.01) * np.minimum(1.0, (t[-1] - t + 1e-3) / 0.03)
        out[pos : pos + n] += env * (0.35 * chord + 0.8 * bass * np.exp(-t / 0.4))
        pos += n
    # Drums on a steady beat: kick on beats 1 and 3, snare on 2 and 4, hi-hat off the beat.
    beat = 60.0 / rng.uniform(80.0, 140.0)
    n_hits = int(n_samples / (sr * beat / 2.0)) + 1
    for h in range(n_hits):
        s = int(h * beat / 2.0 * sr)
        k = min(int(0.25 * sr), n_samples - s)
        if k <= 0:
            break
        t = np.arange(k) / sr
        if h % 4 == 0:  # kick: a sine gliding down to 50 Hz
            glide = 50.0 * t + 3.0 * (1.0 - np.exp(-t / 0.03))
            hit = np.sin(2.0 * np.pi * glide) * np.exp(-t / 0.15)
        elif h % 4 == 2:
            hit = 0.6 * np.diff(white(rng, k + 1)) * np.exp(-t / 0.08)
        else:
            hit = 0.25 * np.diff(white(rng, k + 1)) * np.exp(-t / 0.02)
        out[s : s + k] += hit * rng.uniform(0.7, 1.0)
    return out


def _effects(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """Sound effects: band-passed noise bursts, chirps, applause, and mains hum."""
    sr = sample_rate
    out = np.zeros(n_samples)
    if rng.random() < 0.5:
        mains = 50.0 if rng.random() < 0.5 else 60.0
        out += 0.15 * _tone(mains * np.arange(n_samples) / sr)
    pos = rng.exponential(1.2)
    while pos * sr < n_samples:
        s = int(pos * sr)
        kind = rng.integers(3)
        if kind == 0:  # filtered noise burst (whoosh, door, crash)
            k = int(rng.uniform(0.1, 1.2) * sr)
            t = np.arange(k) / sr
            burst = bandpass(
                white(rng, k), rng.uniform(200.0, 6000.0), rng.uniform(200.0, 2000.0), sr
            )
            ev = burst / rms(burst) * np.minimum(1.0, t / 0.02) * np.exp(-t / (0.3 * t[-1]))
        elif kind == 1:  # chirp / sweep with a few harmonics
            k = int(rng.uniform(0.2, 1.5) * sr)
            t = np.arange(k) / sr
            f1, f2 = rng.uniform(200.0, 4000.0, size=2)
            inst = f1 * (f2 / f1) ** (t / t[-1])
            ph = 2.0 * np.pi * np.cumsum(inst) / sr
            partials = [h for h in range(1, 4) if h * max(f1, f2) < 0.45 * sr]
            ev = sum(0.5**h * np.sin(h * ph) for h in partials) * np.sin(np.pi * t / t[-1])
        else:  # applause: a dense random train of short band-limited claps
            k = int(rng.uniform(1.5, 4.0) * sr)
            t = np.arange(k) / sr
            claps = np.zeros(k)
            n_claps = int(rng.uniform(30.0, 80.0) * k / sr)
            claps[rng.integers(0, k, size=n_claps)] = rng.uniform(0.3, 1.0, size=n_claps)
            kernel = white(rng, int(0.01 * sr)) * np.exp(-np.arange(int(0.01 * sr)) / 40)
            ev = bandpass(np.convolve(claps, kernel)[:k], rng.uniform(1000.0, 3000.0), 2500.0, sr)
            ev = ev / rms(ev) * np.sqrt(np.abs(np.sin(np.pi * t / t[-1])))
        k = min(len(ev), n_samples - s)
        out[s : s + k] += ev[:k] * rng.uniform(0.3, 1.0)
        pos += len(ev) / sr * rng.uniform(0.3, 1.0) + rng.exponential(1.2)
    return out


def _radio_recording(
    seed: int, bank: str, index: int, voices: list[Voice], n_samples: int, sample_rate: int
) -> np.ndarray:
    """One synthetic radio-show "recording": babble, music and effects with moving weights."""
    rng = _rng(seed, _STREAM_RECORDING, _BANK_CODE[bank], index)
    parts = [
        _babble(rng, voices, n_samples, sample_rate),
        _music(rng, n_samples, sample_rate),
        _effects(rng, n_samples, sample_rate),
    ]
    # Babble never fades out completely: it is the part that competes with the pitch cues.
    limits = [(0.4, 1.0, 0.0), (0.0, 1.0, 0.35), (0.0, 1.0, 0.3)]
    mix = np.zeros(n_samples)
    for part, (low, high, p_off) in zip(parts, limits, strict=True):
        mix += part / rms(part) * _smooth_weights(rng, n_samples, sample_rate, low, high, p_off)
    return mix


def _wav_relpath(kind: str, folder: str, item_id: str) -> str:
    return f"{kind}/{folder}/{item_id}.wav"


def _write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono 16-bit PCM WAV, atomically. The float-to-int16 rounding is done here, so the
    bytes do not depend on libsndfile's conversion."""
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    write_audio_atomic(path, pcm, sample_rate, subtype="PCM_16")


def _csv_paths(data_folder: str) -> dict[str, str]:
    names = {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"}
    names.update({"noise_adapt": "noise_adapt.csv", "noise_test": "noise_test.csv"})
    return {key: os.path.join(data_folder, name) for key, name in names.items()}


def _is_up_to_date(data_folder: str, options: dict, paths: dict[str, str]) -> bool:
    """True if the options file matches and every CSV and every wav it lists exists."""
    try:
        with open(os.path.join(data_folder, OPTIONS_FILE), encoding="utf-8") as f:
            if json.load(f) != options:
                return False
        for path in paths.values():
            with open(path, encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f):
                    wav = row["wav"].replace("$data_root", data_folder)
                    if not os.path.isfile(wav):
                        return False
    except (OSError, ValueError, KeyError):
        return False
    return True


def _speakers(seed: int) -> dict[str, list[tuple[str, Voice]]]:
    """Speaker-disjoint pools: ``spk01``.. numbered across splits, alternating sexes."""
    speakers, number = {}, 0
    for split in _SPLITS:
        speakers[split] = []
        for k in range(SPEAKERS_PER_SPLIT[split]):
            number += 1
            rng = _rng(seed, _STREAM_SPEAKER, _SPLIT_CODE[split], k)
            speakers[split].append((f"spk{number:02d}", draw_voice(rng, female=k % 2 == 1)))
    return speakers


def prepare_demo_corpus(
    data_folder,
    *,
    seed: int = 1234,
    n_train: int = 480,
    n_dev: int = 120,
    n_test: int = 900,
    min_duration: float = 1.5,
    max_duration: float = 3.5,
    adapt_noise_minutes: float = 3.0,
    test_noise_minutes: float = 2.0,
    noise_segment_seconds: float | None = None,
    sample_rate: int = 16000,
) -> dict[str, str]:
    """Generate (or reuse) the synthetic emotional-speech corpus and its noise banks.

    Arguments
    ---------
    data_folder : str or path-like
        Output folder; created if needed. Files written under it::

            wav/{train,dev,test}/<ID>.wav    utterances, mono PCM_16
            noise/{adapt,test}/<ID>.wav      noise segments, mono PCM_16
            train.csv, dev.csv, test.csv     ID,wav,duration,arousal,dominance,valence,spk_id
            noise_adapt.csv, noise_test.csv  ID,duration,wav (SpeechBrain AddNoise format)
            demo_corpus.json                 the options, written last

        ``wav`` columns use ``$data_root`` (load with ``replacements={"data_root": folder}``).
    seed : int
        Non-negative master seed; the same options give byte-identical files.
    n_train, n_dev, n_test : int
        Utterances per split (speaker-disjoint: 16, 4 and 6 speakers).
    min_duration, max_duration : float
        Utterance length range in seconds (uniform).
    adapt_noise_minutes, test_noise_minutes : float
        Total length of the adaptation and test noise banks, in minutes (rounded up to
        whole segments).
    noise_segment_seconds : float, optional
        Length of each noise segment in seconds; default ``max_duration + 1.0``. Must be at
        least ``max_duration`` so that one segment covers any utterance.
    sample_rate : int
        Hz, for speech and noise.

    Returns
    -------
    dict
        ``{"train", "dev", "test", "noise_adapt", "noise_test"}`` -> CSV path (str).

    If ``demo_corpus.json`` holds the same options and every listed file exists, nothing is
    regenerated.
    """
    data_folder = os.fspath(data_folder)
    if noise_segment_seconds is None:
        noise_segment_seconds = max_duration + 1.0
    if seed < 0:
        raise SettingsError("prepare_options of the demo corpus: seed must be non-negative")
    if min(n_train, n_dev, n_test) < 1:
        raise SettingsError(
            "prepare_options of the demo corpus: every split needs at least one utterance"
        )
    if not 0.5 <= min_duration <= max_duration:
        raise SettingsError(
            "prepare_options of the demo corpus: need 0.5 <= min_duration <= max_duration (seconds)"
        )
    if noise_segment_seconds < max_duration:
        raise SettingsError(
            "prepare_options of the demo corpus: noise_segment_seconds must be >= max_duration"
        )
    if min(adapt_noise_minutes, test_noise_minutes) <= 0:
        raise SettingsError(
            "prepare_options of the demo corpus: noise bank lengths must be positive"
        )
    if sample_rate < 16000:
        # The formants, fricatives and music partials are laid out for a wideband signal.
        raise SettingsError(
            "prepare_options of the demo corpus: sample_rate must be at least 16000 Hz"
        )

    options = {
        "version": CORPUS_VERSION,
        "seed": int(seed),
        "n_train": int(n_train),
        "n_dev": int(n_dev),
        "n_test": int(n_test),
        "min_duration": float(min_duration),
        "max_duration": float(max_duration),
        "adapt_noise_minutes": float(adapt_noise_minutes),
        "test_noise_minutes": float(test_noise_minutes),
        "noise_segment_seconds": float(noise_segment_seconds),
        "sample_rate": int(sample_rate),
    }
    paths = _csv_paths(data_folder)
    if _is_up_to_date(data_folder, options, paths):
        return paths

    os.makedirs(data_folder, exist_ok=True)
    # Invalidate first: an interrupted regeneration must not look complete next time.
    options_path = os.path.join(data_folder, OPTIONS_FILE)
    if os.path.exists(options_path):
        os.remove(options_path)

    speakers = _speakers(seed)
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    remove_stale_staging(data_folder)
    for split in _SPLITS:
        os.makedirs(os.path.join(data_folder, "wav", split), exist_ok=True)
        remove_stale_staging(os.path.join(data_folder, "wav", split))
        rows = []
        for i in range(sizes[split]):
            utt_id = f"{split}_{i:05d}"
            spk_id, voice = speakers[split][i % len(speakers[split])]
            rng = _rng(seed, _STREAM_UTTERANCE, _SPLIT_CODE[split], i)
            labels = draw_labels(rng)
            n = round(rng.uniform(min_duration, max_duration) * sample_rate)
            wav = synthesize_speech(rng, voice, labels, n_samples=n, sample_rate=sample_rate)
            # Peak 0.5 avoids clipping; the gain is a loudness nuisance, weakly tied to arousal.
            a = (labels[0] - 4.0) / 3.0
            gain = float(
                np.clip(0.65 * 10.0 ** ((4.0 * a + rng.normal(0.0, 3.0)) / 20.0), 0.3, 1.0)
            )
            wav = _peak_normalise(wav, 0.5 * gain)
            rel = _wav_relpath("wav", split, utt_id)
            _write_wav(os.path.join(data_folder, rel), wav, sample_rate)
            rows.append(
                [
                    utt_id,
                    f"$data_root/{rel}",
                    f"{n / sample_rate:.3f}",
                    *(f"{x:.1f}" for x in labels),
                    spk_id,
                ]
            )
        write_csv_atomic(paths[split], MANIFEST_HEADER, rows)

    seg_len = round(noise_segment_seconds * sample_rate)
    minutes = {"adapt": adapt_noise_minutes, "test": test_noise_minutes}
    for bank in _NOISE_BANKS:
        os.makedirs(os.path.join(data_folder, "noise", bank), exist_ok=True)
        remove_stale_staging(os.path.join(data_folder, "noise", bank))
        voices = [
            draw_voice(_rng(seed, _STREAM_BABBLE_VOICE, _BANK_CODE[bank], k), female=k % 2 == 1)
            for k in range(_BABBLE_POOL)
        ]
        n_segments = max(1, math.ceil(minutes[bank] * 60.0 * sample_rate / seg_len - 1e-9))
        rows = []
        for rec in range(math.ceil(n_segments / _SEGMENTS_PER_RECORDING)):
            n_here = min(_SEGMENTS_PER_RECORDING, n_segments - rec * _SEGMENTS_PER_RECORDING)
            mix = _radio_recording(seed, bank, rec, voices, n_here * seg_len, sample_rate)
            for s in range(n_here):
                noise_id = f"{bank}_rec{rec:02d}_seg{s:02d}"
                segment = _peak_normalise(mix[s * seg_len : (s + 1) * seg_len], 0.5)
                rel = _wav_relpath("noise", bank, noise_id)
                _write_wav(os.path.join(data_folder, rel), segment, sample_rate)
                rows.append([noise_id, f"{seg_len / sample_rate:.3f}", f"$data_root/{rel}"])
        write_csv_atomic(paths[f"noise_{bank}"], NOISE_HEADER, rows)

    write_text_atomic(options_path, json.dumps(options, indent=2, sort_keys=True) + "\n")
    return paths
