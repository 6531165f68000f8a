"""The demo corpus' noise: synthetic radio shows of babble, music and sound effects.

What it draws makes the corpus' files: a change here comes with a new
``corpus.CORPUS_VERSION``.
"""

from __future__ import annotations

import numpy as np

from .speech import Voice, bandpass, draw_labels, rms, synthesize_speech, white

__all__ = ["radio_recording"]

# Emotions of the babble talkers: half the corpus' spread around the neutral middle.
_BABBLE_EMOTION_SPREAD = 0.5
# One period of a harmonic tone for music and hum (see ``_tone``).
_TONE_TABLE = sum(
    0.6**h * np.sin(2.0 * np.pi * (h + 1) * np.arange(4096) / 4096)
    for h in range(5)
)


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
    rng: np.random.Generator,
    voices: list[Voice],
    n_samples: int,
    sample_rate: int,
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
            utt = synthesize_speech(
                rng, voices[idx], labels, n_samples=n, sample_rate=sr
            )
            utt *= level / rms(utt)
            lo, hi = max(pos, 0), min(pos + n, n_samples)
            if hi > lo:
                out[lo:hi] += utt[lo - pos : hi - pos]
            pos += n + int(rng.uniform(0.05, 0.5) * sr)
    return out


def _tone(phase: np.ndarray) -> np.ndarray:
    """A harmonic tone (5 harmonics, -4.4 dB each) read from a wavetable at ``phase`` (cycles,
    non-negative); a table lookup is an order of magnitude cheaper than summing sines."""
    return _TONE_TABLE[
        (phase * _TONE_TABLE.size).astype(np.int64) & (_TONE_TABLE.size - 1)
    ]


def _music(
    rng: np.random.Generator, n_samples: int, sample_rate: int
) -> np.ndarray:
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
            chord += _tone(
                440.0 * 2.0 ** ((root + 12 + note - 69) / 12.0) * t
                + rng.random()
            )
        bass = _tone(440.0 * 2.0 ** ((root - 12 - 69) / 12.0) * t)
        env = np.minimum(1.0, t / 0.01) * np.minimum(
            1.0, (t[-1] - t + 1e-3) / 0.03
        )
        out[pos : pos + n] += env * (
            0.35 * chord + 0.8 * bass * np.exp(-t / 0.4)
        )
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


def _effects(
    rng: np.random.Generator, n_samples: int, sample_rate: int
) -> np.ndarray:
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
                white(rng, k),
                rng.uniform(200.0, 6000.0),
                rng.uniform(200.0, 2000.0),
                sr,
            )
            ev = (
                burst
                / rms(burst)
                * np.minimum(1.0, t / 0.02)
                * np.exp(-t / (0.3 * t[-1]))
            )
        elif kind == 1:  # chirp / sweep with a few harmonics
            k = int(rng.uniform(0.2, 1.5) * sr)
            t = np.arange(k) / sr
            f1, f2 = rng.uniform(200.0, 4000.0, size=2)
            inst = f1 * (f2 / f1) ** (t / t[-1])
            ph = 2.0 * np.pi * np.cumsum(inst) / sr
            partials = [h for h in range(1, 4) if h * max(f1, f2) < 0.45 * sr]
            ev = sum(0.5**h * np.sin(h * ph) for h in partials) * np.sin(
                np.pi * t / t[-1]
            )
        else:  # applause: a dense random train of short band-limited claps
            k = int(rng.uniform(1.5, 4.0) * sr)
            t = np.arange(k) / sr
            claps = np.zeros(k)
            n_claps = int(rng.uniform(30.0, 80.0) * k / sr)
            claps[rng.integers(0, k, size=n_claps)] = rng.uniform(
                0.3, 1.0, size=n_claps
            )
            kernel = white(rng, int(0.01 * sr)) * np.exp(
                -np.arange(int(0.01 * sr)) / 40
            )
            ev = bandpass(
                np.convolve(claps, kernel)[:k],
                rng.uniform(1000.0, 3000.0),
                2500.0,
                sr,
            )
            ev = ev / rms(ev) * np.sqrt(np.abs(np.sin(np.pi * t / t[-1])))
        k = min(len(ev), n_samples - s)
        out[s : s + k] += ev[:k] * rng.uniform(0.3, 1.0)
        pos += len(ev) / sr * rng.uniform(0.3, 1.0) + rng.exponential(1.2)
    return out


def radio_recording(
    rng: np.random.Generator,
    voices: list[Voice],
    n_samples: int,
    sample_rate: int,
) -> np.ndarray:
    """One synthetic radio-show "recording": babble, music and effects with moving weights.

    Arguments
    ---------
    rng : numpy.random.Generator
        The recording's own generator (consumed).
    voices : list of Voice
        The talkers the babble draws from; each recording picks 4-8 of them, so at least 8.
    n_samples : int
        Length in samples.
    sample_rate : int
        Hz (at least 16000: the effects and music partials are laid out for a wideband signal).

    Returns
    -------
    numpy.ndarray
        float64 mixture of ``n_samples`` samples, arbitrary scale (the caller normalises).

    Example
    -------
    >>> from ctsl_brain.demo.speech import draw_voice
    >>> voices = [
    ...     draw_voice(np.random.default_rng(k), female=k % 2 == 1)
    ...     for k in range(8)
    ... ]
    >>> mix = radio_recording(np.random.default_rng(0), voices, 8000, 16000)
    >>> mix.shape, bool(np.all(np.isfinite(mix))), rms(mix) > 0.0
    ((8000,), True, True)
    """
    parts = [
        _babble(rng, voices, n_samples, sample_rate),
        _music(rng, n_samples, sample_rate),
        _effects(rng, n_samples, sample_rate),
    ]
    # Babble never fades out completely: it is the part that competes with the pitch cues.
    limits = [(0.4, 1.0, 0.0), (0.0, 1.0, 0.35), (0.0, 1.0, 0.3)]
    mix = np.zeros(n_samples)
    for part, (low, high, p_off) in zip(parts, limits, strict=True):
        mix += (
            part
            / rms(part)
            * _smooth_weights(rng, n_samples, sample_rate, low, high, p_off)
        )
    return mix
