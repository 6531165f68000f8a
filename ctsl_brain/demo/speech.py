"""The demo corpus' emotional-speech synthesiser: a source-filter voice whose prosody and voice
quality follow arousal, dominance and valence (the cues are listed in docs/design.md).

Every function draws from the generator it is given, in a fixed order; what it draws makes
the corpus' files, so a change here comes with a new ``corpus.CORPUS_VERSION``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

__all__ = [
    "VOWELS",
    "Voice",
    "bandpass",
    "draw_labels",
    "draw_voice",
    "rms",
    "synthesize_speech",
    "vowel_probabilities",
    "white",
]

# Label distribution on the 1-7 scale (arousal, dominance, valence): centred near 4, not
# uniform, with arousal and dominance strongly correlated as in real annotated corpora.
_LABEL_MEAN = np.array([4.0, 4.0, 4.1])
_LABEL_STD = np.array([1.15, 1.1, 1.1])
_LABEL_CORR = np.array([[1.0, 0.55, 0.1], [0.55, 1.0, 0.2], [0.1, 0.2, 1.0]])
_LABEL_CHOL = np.linalg.cholesky(_LABEL_CORR)

# Adult male F1-F4 (Hz) of a few vowels (Peterson & Barney style); scaled per speaker.
VOWELS = np.array(
    [
        [280.0, 2250.0, 2890.0, 3500.0],  # i
        [400.0, 2000.0, 2550.0, 3500.0],  # e
        [660.0, 1720.0, 2410.0, 3400.0],  # ae
        [730.0, 1090.0, 2440.0, 3400.0],  # a
        [500.0, 900.0, 2400.0, 3300.0],  # o
        [310.0, 870.0, 2250.0, 3300.0],  # u
        [500.0, 1500.0, 2500.0, 3500.0],  # schwa
    ]
)
_BANDWIDTHS = np.array([70.0, 95.0, 150.0, 220.0])
# How much a fully positive valence (+1 on the normalised scale) raises F1..F4 ("smile").
_SMILE = np.array([0.16, 0.22, 0.12, 0.06])
# What the words say: each vowel's weight towards positive (+) or negative (-) content, in the
# order of ``VOWELS``. An utterance of valence v draws its vowels with probabilities
# proportional to exp(_LEXICAL_VALENCE * v * weight), so positive utterances favour front
# vowels and negative ones back vowels, as a stand-in for the lexical content that carries
# much of valence in real speech.
_VOWEL_VALENCE = np.array([1.0, 0.6, 0.3, -0.3, -0.6, -1.0, 0.0])
_LEXICAL_VALENCE = 2.5


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker.

    Arguments
    ---------
    f0_hz : float
        Base pitch in Hz.
    tract : float
        Formant scale factor: the vowel table's adult male formants are multiplied by it, so
        above 1 is a shorter vocal tract.
    rate : float
        Speaking rate in syllables per second.
    breath : float
        Breathiness factor around 1, scaling the aspiration noise and the open glottis.

    Example
    -------
    >>> Voice(f0_hz=120.0, tract=1.0, rate=4.5, breath=1.0).rate
    4.5
    """

    f0_hz: float
    tract: float
    rate: float
    breath: float


def draw_voice(rng: np.random.Generator, *, female: bool) -> Voice:
    """Draws a speaker; female voices get higher pitch and a shorter tract (higher formants).

    Arguments
    ---------
    rng : numpy.random.Generator
        The speaker's own generator; four numbers are drawn from it.
    female : bool
        Draw from the female ranges (f0 170-240 Hz, tract factor 1.10-1.22) rather than the
        male ones (95-140 Hz, 0.92-1.04).

    Returns
    -------
    Voice
        The speaker, with a rate of 3.8-5 syllables/s and a breathiness of 0.8-1.25.

    Example
    -------
    >>> voice = draw_voice(np.random.default_rng(0), female=True)
    >>> 170.0 <= voice.f0_hz <= 240.0 and 1.10 <= voice.tract <= 1.22
    True
    """
    if female:
        f0, tract = rng.uniform(170.0, 240.0), rng.uniform(1.10, 1.22)
    else:
        f0, tract = rng.uniform(95.0, 140.0), rng.uniform(0.92, 1.04)
    return Voice(
        f0_hz=float(f0),
        tract=float(tract),
        rate=float(rng.uniform(3.8, 5.0)),
        breath=float(rng.uniform(0.8, 1.25)),
    )


def draw_labels(rng: np.random.Generator) -> np.ndarray:
    """Arousal, dominance, valence on the 1-7 scale, rounded to 0.2 like a 5-rater mean.

    Arguments
    ---------
    rng : numpy.random.Generator
        The generator to draw from (three standard normals).

    Returns
    -------
    numpy.ndarray
        The three labels, from a correlated normal distribution centred near 4, clipped to
        1-7.

    Example
    -------
    >>> labels = draw_labels(np.random.default_rng(0))
    >>> labels.shape, bool(np.all((labels >= 1.0) & (labels <= 7.0)))
    ((3,), True)
    >>> bool(np.allclose(labels * 5.0, np.round(labels * 5.0)))
    True
    """
    x = _LABEL_MEAN + _LABEL_STD * (_LABEL_CHOL @ rng.standard_normal(3))
    return np.round(np.clip(x, 1.0, 7.0) * 5.0) / 5.0


def rms(x: np.ndarray) -> float:
    """The root mean square of a signal, never exactly zero (so that it can divide).

    Arguments
    ---------
    x : numpy.ndarray
        The signal.

    Returns
    -------
    float
        sqrt(mean(x^2) + 1e-20).

    Example
    -------
    >>> rms(np.array([3.0, -3.0]))
    3.0
    """
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def white(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance white noise.

    Uniform rather than Gaussian: three times cheaper, and every use is filtered or enveloped,
    which makes the distribution irrelevant.

    Arguments
    ---------
    rng : numpy.random.Generator
        The generator to draw from (``n`` uniform numbers).
    n : int
        Number of samples.

    Returns
    -------
    numpy.ndarray
        ``n`` zero-mean samples of unit variance, uniform in +-sqrt(3).

    Example
    -------
    >>> round(float(np.std(white(np.random.default_rng(0), 100000))), 2)
    1.0
    """
    return (rng.random(n) - 0.5) * math.sqrt(12.0)


def _formant_filter(
    formants: np.ndarray, bandwidths: np.ndarray, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """(b, a) of a cascade of unit-DC-gain two-pole resonators (Klatt-style vocal tract).

    Cascading keeps the relative formant amplitudes natural without per-formant gains. The
    product is one 8th-order filter: in float64 it matches the second-order-section cascade to
    ~1e-11 for these pole positions and costs half as much.
    """
    r = np.exp(-np.pi * bandwidths / sample_rate)
    a = np.array([1.0])
    for r_k, f_k in zip(r, formants, strict=True):
        a = np.convolve(
            a,
            [
                1.0,
                -2.0 * r_k * math.cos(2.0 * math.pi * f_k / sample_rate),
                r_k**2,
            ],
        )
    return np.array([a.sum()]), a


def _taper(n: int, fraction: float) -> np.ndarray:
    """A flat window with raised-cosine ramps over ``fraction`` of its length at each end."""
    k = max(1, min(int(fraction * n), n // 2))
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k) + 0.5) / k)
    w = np.ones(n)
    w[:k] = ramp
    w[n - k :] = ramp[::-1]
    return w


def bandpass(
    x: np.ndarray, centre: float, bandwidth: float, sample_rate: int
) -> np.ndarray:
    """Constant-peak-gain two-pole band-pass (unit gain at ``centre`` Hz).

    Arguments
    ---------
    x : numpy.ndarray
        The signal.
    centre : float
        Centre frequency in Hz; limited to 0.45 times the sample rate.
    bandwidth : float
        Bandwidth in Hz.
    sample_rate : int
        Hz.

    Returns
    -------
    numpy.ndarray
        The filtered signal, as long as ``x``.

    Example
    -------
    >>> tone = np.sin(2.0 * np.pi * 1000.0 * np.arange(16000) / 16000)
    >>> out = bandpass(tone, 1000.0, 200.0, 16000)
    >>> round(rms(out[8000:]) / rms(tone[8000:]), 2)
    1.0
    """
    centre = min(centre, 0.45 * sample_rate)
    r = math.exp(-math.pi * bandwidth / sample_rate)
    a = [1.0, -2.0 * r * math.cos(2.0 * math.pi * centre / sample_rate), r * r]
    g = 0.5 * (1.0 - r * r)
    return lfilter([g, 0.0, -g], a, x)


def vowel_probabilities(valence: float) -> np.ndarray:
    """How likely each vowel of :data:`VOWELS` is in an utterance of the given valence.

    Uniform when neutral, front vowels for positive and back vowels for negative valence: what
    is said follows valence.

    Arguments
    ---------
    valence : float
        Normalised valence, -1 to 1 (0 is the neutral middle of the 1-7 scale).

    Returns
    -------
    numpy.ndarray
        One probability per row of :data:`VOWELS`, summing to 1.

    Example
    -------
    >>> vowel_probabilities(0.0).round(3).tolist()
    [0.143, 0.143, 0.143, 0.143, 0.143, 0.143, 0.143]
    >>> (
    ...     int(np.argmax(vowel_probabilities(1.0))),
    ...     int(np.argmax(vowel_probabilities(-1.0))),
    ... )
    (0, 5)
    """
    p = np.exp(_LEXICAL_VALENCE * valence * _VOWEL_VALENCE)
    return p / p.sum()


def synthesize_speech(
    rng: np.random.Generator,
    voice: Voice,
    labels: np.ndarray,
    *,
    n_samples: int,
    sample_rate: int,
) -> np.ndarray:
    """Synthesises one speech-like utterance whose prosody and voice quality follow its labels.

    Arguments
    ---------
    rng : numpy.random.Generator
        The utterance's own generator (consumed).
    voice : Voice
        The speaker.
    labels : numpy.ndarray
        Arousal, dominance, valence on the 1-7 scale.
    n_samples : int
        Output length in samples.
    sample_rate : int
        Hz (at least 16000: formants and fricatives are laid out for a wideband signal).

    Returns
    -------
    numpy.ndarray
        float64 waveform of ``n_samples`` samples, arbitrary scale (the caller normalises).

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> voice = draw_voice(rng, female=False)
    >>> wav = synthesize_speech(
    ...     rng, voice, draw_labels(rng), n_samples=8000, sample_rate=16000
    ... )
    >>> wav.shape, bool(np.all(np.isfinite(wav))), rms(wav) > 0.0
    ((8000,), True, True)
    """
    sr = sample_rate
    duration = n_samples / sr
    # Normalised attributes in [-1, 1]; 0 is the neutral middle of the scale.
    a, d, v = ((np.asarray(labels, dtype=float) - 4.0) / 3.0).tolist()

    # --- Timing: arousal speeds up syllables and removes pauses; dominance lengthens stress.
    rate = voice.rate * math.exp(0.30 * a + rng.normal(0.0, 0.06))
    pause_prob = float(
        np.clip(0.30 - 0.22 * a + rng.normal(0.0, 0.04), 0.03, 0.65)
    )
    pause_mean = 0.18 * (1.0 - 0.35 * a)
    stress_len = 1.10 + 0.22 * (d + 1.0)
    stress_amp = 1.25 + 0.85 * (d + 1.0)
    breath = voice.breath * (0.10 + 0.17 * (1.0 - v) + 0.07 * (1.0 - d))
    breath = float(np.clip(breath + rng.normal(0.0, 0.02), 0.02, 0.7))

    syllables = []  # (nucleus start s, nucleus length s, onset length s, stressed)
    t = rng.uniform(0.04, 0.12)
    end = duration - rng.uniform(0.06, 0.15)
    while True:
        stressed = bool(rng.random() < 0.35)
        onset = rng.uniform(0.025, 0.07) if rng.random() < 0.5 else 0.0
        period = math.exp(rng.normal(0.0, 0.2)) / rate
        nucleus = max(0.06, 0.82 * period - onset) * (
            stress_len if stressed else 1.0
        )
        if t + onset + nucleus > end:
            if syllables:
                break
            nucleus = max(0.05, end - t - onset)
        syllables.append((t + onset, nucleus, onset, stressed))
        t += onset + nucleus + 0.18 * period
        if rng.random() < pause_prob:
            t += pause_mean * math.exp(rng.normal(0.0, 0.35))

    # --- f0 contour in semitones relative to the speaker's base pitch.
    level = 5.0 * a - 2.0 * d + rng.normal(0.0, 0.7)
    span = max(0.4, 2.6 + 2.4 * a + rng.normal(0.0, 0.4))
    final = 4.0 * v + rng.normal(0.0, 1.0)
    knot_t, knot_st = [], []
    for k, (start, nuc, _, stressed) in enumerate(syllables):
        peak = span * (
            rng.uniform(0.65, 1.0) if stressed else rng.uniform(0.0, 0.3)
        )
        if k == len(syllables) - 1:
            peak *= 0.5  # phrase-final syllables rarely carry a full accent
        pos = rng.uniform(0.3, 0.7)
        knot_t += [start, start + pos * nuc, start + nuc]
        knot_st += [0.3 * peak, peak, 0.2 * peak]
    # Phrase-final movement over the last two syllables: rising for positive valence,
    # falling for negative valence.
    knot_t, knot_st = np.array(knot_t), np.array(knot_st)
    ramp_start = syllables[max(0, len(syllables) - 2)][0]
    knot_st += final * np.clip(
        (knot_t - ramp_start) / (knot_t[-1] - ramp_start), 0.0, 1.0
    )
    # Micro-prosodic roughness at ~100 Hz: negative valence gives an irregular contour.
    rough = max(0.05, 0.12 + 0.22 * (1.0 - v) + rng.normal(0.0, 0.03))
    n_ctrl = int(duration * 100.0) + 2
    wobble = np.convolve(
        rng.standard_normal(n_ctrl), [0.25, 0.5, 0.25], mode="same"
    )
    wobble *= rough / 0.612  # the smoothing kernel shrinks the std by 0.612
    ctrl_t = np.arange(n_ctrl) / 100.0

    # --- Glottal source (Rosenberg pulses): arousal shortens the open and closing phases, which
    # raises high-frequency energy (flatter tilt); breathiness keeps the glottis open longer.
    oq = float(
        np.clip(
            0.60 - 0.14 * a - 0.05 * d + 0.25 * breath + rng.normal(0, 0.02),
            0.3,
            0.9,
        )
    )
    tn = oq * float(np.clip(0.38 - 0.12 * a + rng.normal(0.0, 0.02), 0.15, 0.5))
    tp = oq - tn
    tilt = float(
        np.clip(
            0.72 - 0.30 * a + 0.1 * breath + rng.normal(0.0, 0.03), 0.2, 0.93
        )
    )

    # Only the syllables are synthesised (silence costs nothing): for each one, f0 contour ->
    # glottal excitation + aspiration -> vowel formants, then a fricative-like noise onset.
    tail = int(0.03 * sr)
    out = np.zeros(n_samples + tail)
    smile = 1.0 + _SMILE * v
    bandwidths = _BANDWIDTHS * (1.0 + 0.8 * breath)
    vowel_p = vowel_probabilities(v)
    for start, nuc, onset, stressed in syllables:
        s = int(start * sr)
        e = min(n_samples, s + max(int(nuc * sr), 16))
        t = np.arange(s, e) / sr
        semitones = np.interp(t, knot_t, knot_st) + np.interp(t, ctrl_t, wobble)
        semitones += level - 1.8 * t / duration  # declination
        f0 = np.clip(voice.f0_hz * np.exp2(semitones / 12.0), 55.0, 600.0)
        phase = np.cumsum(f0 / sr)
        p = phase - np.floor(phase)
        # Rosenberg's polynomial pulse: smooth opening 3x^2 - 2x^3, closing 1 - y^2 that ends
        # in a corner (the glottal closure, the main source of high-frequency energy).
        x = p * (1.0 / tp)
        y = (p - tp) * (1.0 / tn)
        flow = np.where(
            p < tp, x * x * (3.0 - 2.0 * x), np.maximum(0.0, 1.0 - y * y)
        )
        # Flow derivative = glottal excitation with lip radiation, plus aspiration noise
        # (stronger while the glottis is open). The tilt low-pass acts on both, as vocal
        # effort does, so that breathy low-arousal voices do not gain high frequencies.
        pulses = np.diff(flow, prepend=0.0)
        aspiration = white(rng, e - s) * np.where(p < oq, 1.0, 0.35)
        excitation = pulses + (1.2 * breath * rms(pulses)) * aspiration
        excitation = lfilter([1.0 - tilt], [1.0, -tilt], excitation)

        amp = (stress_amp if stressed else 1.0) * math.exp(
            rng.normal(0.0, 0.15)
        )
        vowel = VOWELS[rng.choice(len(VOWELS), p=vowel_p)]
        formants = (
            vowel * voice.tract * smile * np.exp(rng.normal(0.0, 0.03, size=4))
        )
        b, a_poly = _formant_filter(
            np.minimum(formants, 0.45 * sr), bandwidths, sr
        )
        seg = np.zeros(e - s + tail)
        seg[: e - s] = excitation * _taper(e - s, 0.25) * amp
        seg = lfilter(b, a_poly, seg)
        out[s : e + tail] += seg
        k = min(int(onset * sr), s)
        if k > 8:
            fric = white(rng, k) * _taper(k, 0.35)
            fric = bandpass(
                fric, rng.uniform(2500.0, 5500.0) * voice.tract, 1500.0, sr
            )
            out[s - k : s] += fric * (
                rng.uniform(0.15, 0.35) * rms(seg) / rms(fric)
            )
    out = out[:n_samples]
    # A faint noise floor, as in any real recording (and no exact digital silence).
    out += white(rng, n_samples) * (
        np.max(np.abs(out)) * 10.0 ** (-55.0 / 20.0)
    )
    return out
