"""The demo corpus: synthetic emotional speech in speaker-disjoint splits, radio-like
adaptation and test noise banks, and field recordings, all deterministic for a seed (see
docs/design.md).
"""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

from ..dataio import (
    MANIFEST_COLUMNS,
    NOISE_COLUMNS,
    SettingsError,
    remove_stale_staging,
    write_audio_atomic,
    write_csv_atomic,
    write_text_atomic,
)
from .radio_noise import radio_recording
from .speech import Voice, draw_labels, draw_voice, rms, synthesize_speech

__all__ = [
    "CORPUS_VERSION",
    "FIELD_SPEECH_FILE",
    "write_field_recordings",
    "MANIFEST_HEADER",
    "NOISE_HEADER",
    "SPEAKERS_PER_SPLIT",
    "prepare_demo_corpus",
]

# Bump whenever the synthesis changes, so that caches built by older code are regenerated.
CORPUS_VERSION = 5

# The recipe's manifest and noise bank formats.
MANIFEST_HEADER = MANIFEST_COLUMNS
NOISE_HEADER = NOISE_COLUMNS
OPTIONS_FILE = "demo_corpus.json"
# The true speech intervals of the field recordings.
FIELD_SPEECH_FILE = "field_speech.csv"

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
_STREAM_FIELD = 5
_STREAM_FIELD_VOICE = 6

# Babble voices per noise bank; each recording of the bank draws 4-8 of them.
_BABBLE_POOL = 12
# Segments cut from one synthetic recording; several recordings make a bank.
_SEGMENTS_PER_RECORDING = 6
# Field recordings: people of their own (outside every split and every babble) talk, in turns
# of one utterance separated by pauses, over new recordings of the adaptation noise's place.
_FIELD_TALKERS = 6
_FIELD_RECORDING_SECONDS = 60.0
_FIELD_PAUSE_SECONDS = (2.0, 10.0)  # between turns, uniform
_FIELD_SPEECH_DB = (5.0, 15.0)  # speech level above the noise's (RMS), uniform
_FIELD_NOISE_RMS = 0.05  # about -26 dBFS


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for one item, so items do not depend on generation order."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _speakers(seed: int) -> dict[str, list[tuple[str, Voice]]]:
    """Speaker-disjoint pools: ``spk01``.. numbered across splits, alternating sexes."""
    speakers, number = {}, 0
    for split in _SPLITS:
        speakers[split] = []
        for k in range(SPEAKERS_PER_SPLIT[split]):
            number += 1
            rng = _rng(seed, _STREAM_SPEAKER, _SPLIT_CODE[split], k)
            speakers[split].append(
                (f"spk{number:02d}", draw_voice(rng, female=k % 2 == 1))
            )
    return speakers


def _babble_voices(seed: int, bank: str) -> list[Voice]:
    """A noise bank's babble talkers: voices of their own streams, outside every split."""
    return [
        draw_voice(
            _rng(seed, _STREAM_BABBLE_VOICE, _BANK_CODE[bank], k),
            female=k % 2 == 1,
        )
        for k in range(_BABBLE_POOL)
    ]


def _csv_paths(data_folder: str) -> dict[str, str]:
    names = {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"}
    names.update(
        {"noise_adapt": "noise_adapt.csv", "noise_test": "noise_test.csv"}
    )
    return {key: os.path.join(data_folder, name) for key, name in names.items()}


def _wav_relpath(kind: str, folder: str, item_id: str) -> str:
    return f"{kind}/{folder}/{item_id}.wav"


def _peak_normalise(x: np.ndarray, peak: float) -> np.ndarray:
    return x * (peak / max(float(np.max(np.abs(x))), 1e-12))


def _write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono 16-bit PCM WAV, atomically. The float-to-int16 rounding is done here, so the
    bytes do not depend on libsndfile's conversion."""
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    write_audio_atomic(path, pcm, sample_rate, subtype="PCM_16")


def _write_split(
    data_folder: str,
    csv_path: str,
    split: str,
    size: int,
    speakers: list[tuple[str, Voice]],
    *,
    seed: int,
    min_duration: float,
    max_duration: float,
    sample_rate: int,
) -> None:
    """Write one split's utterances, each from its own stream, then its manifest."""
    os.makedirs(os.path.join(data_folder, "wav", split), exist_ok=True)
    remove_stale_staging(os.path.join(data_folder, "wav", split))
    rows = []
    for i in range(size):
        utt_id = f"{split}_{i:05d}"
        spk_id, voice = speakers[i % len(speakers)]
        rng = _rng(seed, _STREAM_UTTERANCE, _SPLIT_CODE[split], i)
        labels = draw_labels(rng)
        n = round(rng.uniform(min_duration, max_duration) * sample_rate)
        wav = synthesize_speech(
            rng, voice, labels, n_samples=n, sample_rate=sample_rate
        )
        # Peak 0.5 avoids clipping; the gain is a loudness nuisance, weakly tied to arousal.
        a = (labels[0] - 4.0) / 3.0
        gain = float(
            np.clip(
                0.65 * 10.0 ** ((4.0 * a + rng.normal(0.0, 3.0)) / 20.0),
                0.3,
                1.0,
            )
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
    write_csv_atomic(csv_path, MANIFEST_HEADER, rows)


def _write_noise_bank(
    data_folder: str,
    csv_path: str,
    bank: str,
    minutes: float,
    *,
    seed: int,
    seg_len: int,
    sample_rate: int,
) -> None:
    """Write one noise bank: recordings of its own streams, cut into segments of ``seg_len``
    samples (at least ``minutes`` in all), then its ``AddNoise`` CSV."""
    os.makedirs(os.path.join(data_folder, "noise", bank), exist_ok=True)
    remove_stale_staging(os.path.join(data_folder, "noise", bank))
    voices = _babble_voices(seed, bank)
    n_segments = max(
        1, math.ceil(minutes * 60.0 * sample_rate / seg_len - 1e-9)
    )
    rows = []
    for rec in range(math.ceil(n_segments / _SEGMENTS_PER_RECORDING)):
        n_here = min(
            _SEGMENTS_PER_RECORDING, n_segments - rec * _SEGMENTS_PER_RECORDING
        )
        rng = _rng(seed, _STREAM_RECORDING, _BANK_CODE[bank], rec)
        mix = radio_recording(rng, voices, n_here * seg_len, sample_rate)
        for s in range(n_here):
            noise_id = f"{bank}_rec{rec:02d}_seg{s:02d}"
            segment = _peak_normalise(mix[s * seg_len : (s + 1) * seg_len], 0.5)
            rel = _wav_relpath("noise", bank, noise_id)
            _write_wav(os.path.join(data_folder, rel), segment, sample_rate)
            rows.append(
                [noise_id, f"{seg_len / sample_rate:.3f}", f"$data_root/{rel}"]
            )
    write_csv_atomic(csv_path, NOISE_HEADER, rows)


def write_field_recordings(
    data_folder: str,
    csv_path: str,
    minutes: float,
    *,
    seed: int,
    min_duration: float,
    max_duration: float,
    sample_rate: int,
) -> None:
    """Write recordings of the adaptation noise's place with people talking in them.

    Arguments
    ---------
    data_folder : str
        The corpus folder; the recordings go to ``field/field_<NN>.wav`` under it.
    csv_path : str
        The CSV of the true speech intervals to write.
    minutes : float
        Their total length (rounded up to whole recordings of 60 s).
    seed : int
        The corpus' seed.
    min_duration, max_duration : float
        Utterance length range in seconds (uniform).
    sample_rate : int
        Hz.

    Each recording is a new radio-show mixture of the adaptation bank's babble voices (the
    same place, not the same audio), over which talkers of their own speak one utterance per
    turn, 5 to 15 dB above the noise, with pauses of 2 to 10 s. ``field_speech.csv`` lists
    the true speech intervals (``file,start,end``, seconds).
    """
    folder = os.path.join(data_folder, "field")
    os.makedirs(folder, exist_ok=True)
    remove_stale_staging(folder)
    voices = _babble_voices(seed, "adapt")
    talkers = [
        draw_voice(_rng(seed, _STREAM_FIELD_VOICE, k), female=k % 2 == 1)
        for k in range(_FIELD_TALKERS)
    ]
    n_samples = round(_FIELD_RECORDING_SECONDS * sample_rate)
    rows = []
    for rec in range(
        max(1, math.ceil(minutes * 60.0 / _FIELD_RECORDING_SECONDS - 1e-9))
    ):
        rng = _rng(seed, _STREAM_FIELD, rec)
        mix = radio_recording(rng, voices, n_samples, sample_rate)
        mix *= _FIELD_NOISE_RMS / rms(mix)
        rel = f"field/field_{rec:02d}.wav"
        start = rng.uniform(*_FIELD_PAUSE_SECONDS) / 2
        while True:
            seconds = rng.uniform(min_duration, max_duration)
            if start + seconds > _FIELD_RECORDING_SECONDS - 0.5:
                break
            talker = talkers[int(rng.integers(len(talkers)))]
            n = round(seconds * sample_rate)
            utterance = synthesize_speech(
                rng,
                talker,
                draw_labels(rng),
                n_samples=n,
                sample_rate=sample_rate,
            )
            level = 10.0 ** (rng.uniform(*_FIELD_SPEECH_DB) / 20.0)
            first = round(start * sample_rate)
            mix[first : first + n] += (
                utterance / rms(utterance) * _FIELD_NOISE_RMS * level
            )
            rows.append(
                [
                    rel,
                    f"{first / sample_rate:.3f}",
                    f"{(first + n) / sample_rate:.3f}",
                ]
            )
            start += seconds + rng.uniform(*_FIELD_PAUSE_SECONDS)
        _write_wav(
            os.path.join(data_folder, rel),
            _peak_normalise(mix, 0.9),
            sample_rate,
        )
    write_csv_atomic(csv_path, ["file", "start", "end"], rows)


def _is_up_to_date(
    data_folder: str, options: dict, paths: dict[str, str]
) -> bool:
    """True if the options file matches and every CSV and every wav it lists exists."""
    try:
        with open(
            os.path.join(data_folder, OPTIONS_FILE), encoding="utf-8"
        ) as f:
            if json.load(f) != options:
                return False
        for path in paths.values():
            with open(path, encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f):
                    wav = row["wav"].replace("$data_root", data_folder)
                    if not os.path.isfile(wav):
                        return False
        field = os.path.join(data_folder, FIELD_SPEECH_FILE)
        with open(field, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if not os.path.isfile(os.path.join(data_folder, row["file"])):
                    return False
    except (OSError, ValueError, KeyError):
        return False
    return True


def prepare_demo_corpus(
    data_folder,
    *,
    seed: int = 1234,
    n_train: int = 480,
    n_dev: int = 120,
    n_test: int = 600,
    min_duration: float = 1.5,
    max_duration: float = 3.5,
    adapt_noise_minutes: float = 3.0,
    test_noise_minutes: float = 2.0,
    field_minutes: float = 5.0,
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
            field/field_<NN>.wav             field recordings: the adaptation noise's place,
                                             with people talking (mono PCM_16, 60 s each)
            field_speech.csv                 file,start,end: their true speech intervals
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
    field_minutes : float
        Total length of the field recordings, in minutes (rounded up to whole recordings of
        60 s): new recordings of the adaptation noise's place with talkers of their own, for
        adapting from recordings with speech in them (``--field_folder <data_folder>/field``).
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
        raise SettingsError(
            "prepare_options of the demo corpus: seed must be non-negative"
        )
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
    if min(adapt_noise_minutes, test_noise_minutes, field_minutes) <= 0:
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
        "field_minutes": float(field_minutes),
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
        _write_split(
            data_folder,
            paths[split],
            split,
            sizes[split],
            speakers[split],
            seed=seed,
            min_duration=min_duration,
            max_duration=max_duration,
            sample_rate=sample_rate,
        )

    seg_len = round(noise_segment_seconds * sample_rate)
    minutes = {"adapt": adapt_noise_minutes, "test": test_noise_minutes}
    for bank in _NOISE_BANKS:
        _write_noise_bank(
            data_folder,
            paths[f"noise_{bank}"],
            bank,
            minutes[bank],
            seed=seed,
            seg_len=seg_len,
            sample_rate=sample_rate,
        )

    write_field_recordings(
        data_folder,
        os.path.join(data_folder, FIELD_SPEECH_FILE),
        field_minutes,
        seed=seed,
        min_duration=min_duration,
        max_duration=max_duration,
        sample_rate=sample_rate,
    )

    write_text_atomic(
        options_path, json.dumps(options, indent=2, sort_keys=True) + "\n"
    )
    return paths
