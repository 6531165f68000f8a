"""Noise banks from a folder of recordings: formats, order, disjointness, errors, caching."""

import csv
import hashlib
import logging
import os

import numpy as np
import pytest
import soundfile
import torch
from torchaudio.functional import resample

from ctsl_brain.data import DataError
from ctsl_brain.noise_prep import _plan, _resample_stream, prepare_noise_banks

SR = 16000


def _noise(seed, seconds, sample_rate, channels=1, level=0.1):
    """Deterministic noise, distinct for each seed."""
    shape = (round(seconds * sample_rate), channels)
    return (np.random.default_rng(seed).normal(0, level, shape)).astype(np.float32)


def _write(path, audio, sample_rate, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".ogg":
        # libsndfile's Vorbis encoder is written in short pieces (large writes can crash it).
        channels = audio.shape[1] if audio.ndim > 1 else 1
        with soundfile.SoundFile(path, "w", sample_rate, channels, subtype="VORBIS") as f:
            for i in range(0, len(audio), sample_rate // 4):
                f.write(audio[i : i + sample_rate // 4])
    else:
        soundfile.write(path, audio, sample_rate, **kwargs)


def _read_csv(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        return next(reader), list(reader)


def _snapshot(folder):
    """Content, size and modification time of every file under ``folder``."""
    state = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            stat = os.stat(path)
            state[os.path.relpath(path, folder)] = (digest, stat.st_size, stat.st_mtime_ns)
    return state


def _output_mtimes(folder):
    return {
        os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
        for root, _, files in os.walk(folder)
        for name in files
    }


@pytest.fixture
def mixed_folder(tmp_path):
    """Four recordings of mixed formats, rates and channel counts, one in a subfolder."""
    folder = tmp_path / "recordings"
    _write(folder / "a.wav", _noise(1, 2.5, 44100, channels=2), 44100)
    _write(folder / "b.flac", _noise(2, 2.2, 8000), 8000)
    _write(folder / "c.ogg", _noise(3, 3.0, 22050), 22050)
    _write(folder / "sub" / "d.wav", _noise(4, 2.0, SR), SR, subtype="FLOAT")
    return folder


def test_mixed_formats_give_16k_mono_banks(mixed_folder, tmp_path):
    before = _snapshot(mixed_folder)
    out = tmp_path / "banks"
    result = prepare_noise_banks(mixed_folder, out, segment_seconds=1.0, adapt_minutes=0.05)

    assert result["noise_adapt"] == str(out / "noise_adapt.csv")
    assert result["noise_test"] == str(out / "noise_test.csv")
    assert result["dropped"] == []
    totals = {}
    for bank in ("adapt", "test"):
        header, rows = _read_csv(result[f"noise_{bank}"])
        assert header == ["ID", "duration", "wav"]
        assert [row[0] for row in rows] == [f"{bank}_{i:04d}" for i in range(len(rows))]
        totals[bank] = 0.0
        for _, duration, wav in rows:
            assert os.path.isabs(wav) and os.path.dirname(wav) == str(out / f"noise_{bank}")
            info = soundfile.info(wav)
            assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "FLOAT")
            assert float(duration) == pytest.approx(info.frames / SR, abs=1e-6)
            # Whole segments, or remainders of at least half a segment.
            assert SR // 2 <= info.frames <= SR
            totals[bank] += info.frames / SR
    # a.wav (2.5 s) gives 1 + 1 + 0.5 s, b.flac's first 0.5 s completes the 3 s.
    assert result["adapt_seconds"] == pytest.approx(totals["adapt"]) == pytest.approx(3.0)
    # b's last 1.7 s (1 + 0.7), c.ogg's 3 s, sub/d.wav's 2 s.
    assert result["test_seconds"] == pytest.approx(totals["test"]) == pytest.approx(6.7)
    assert _snapshot(mixed_folder) == before, "the noise folder was modified"


def test_adaptation_bank_is_the_first_minutes_and_disjoint_from_the_test_bank(tmp_path):
    folder = tmp_path / "recordings"
    # 16 kHz float files pass through unchanged, so segments can be matched sample for sample.
    seconds = {"z.wav": 2.4, "m/n.wav": 2.0, "a.wav": 1.3, "m.wav": 1.7}
    for seed, (name, length) in enumerate(seconds.items()):
        _write(folder / name, _noise(seed, length, SR)[:, 0], SR, subtype="FLOAT")
    out = tmp_path / "banks"
    result = prepare_noise_banks(folder, out, segment_seconds=0.5, adapt_minutes=2.5 / 60)

    order = ["a.wav", "m.wav", "m/n.wav", "z.wav"]  # sorted relative paths
    recordings = [soundfile.read(folder / name, dtype="float32")[0] for name in order]
    stream = np.concatenate(recordings)
    ends = np.cumsum([len(r) for r in recordings])
    adapt_len = round(2.5 * SR)
    window = 16
    where = {stream[i : i + window].tobytes(): i for i in range(len(stream) - window + 1)}
    positions = {}
    for bank in ("adapt", "test"):
        positions[bank] = []
        for _, _, wav in _read_csv(result[f"noise_{bank}"])[1]:
            segment = soundfile.read(wav, dtype="float32")[0]
            start = where[segment[:window].tobytes()]
            np.testing.assert_array_equal(segment, stream[start : start + len(segment)])
            # Never across two recordings.
            assert np.searchsorted(ends, start, "right") == np.searchsorted(
                ends, start + len(segment) - 1, "right"
            )
            positions[bank].append((start, start + len(segment)))
    assert positions["adapt"] == sorted(positions["adapt"])
    assert positions["test"] == sorted(positions["test"])
    assert all(stop <= adapt_len for _, stop in positions["adapt"])
    assert all(start >= adapt_len for start, _ in positions["test"])
    # a.wav (1.3 s: 0.5 + 0.5 + 0.3, at least half a segment) and m.wav up to the 2.5 s
    # boundary (1.2 s: 0.5 + 0.5, 0.2 s dropped); m.wav's last 0.5 s starts the test bank.
    assert positions["adapt"][:4] == [(0, 8000), (8000, 16000), (16000, 20800), (20800, 28800)]
    assert len(positions["adapt"]) == 5 and ends[0] == 20800
    assert positions["test"][0] == (adapt_len, adapt_len + SR // 2)
    # Cross-check by exact sample windows: no window of the adaptation bank is in the test bank.
    adapt_windows = {
        stream[i : i + window].tobytes()
        for start, stop in positions["adapt"]
        for i in range(start, stop - window + 1)
    }
    for _, _, wav in _read_csv(result["noise_test"])[1]:
        segment = soundfile.read(wav, dtype="float32")[0]
        for i in range(len(segment) - window + 1):
            assert segment[i : i + window].tobytes() not in adapt_windows


def test_stereo_sine_is_downmixed_and_resampled(tmp_path):
    folder = tmp_path / "recordings"
    t = np.arange(3 * 44100) / 44100
    sine = np.sin(2 * np.pi * 440 * t)
    # Mean of the channels: 0.4; their sum would give 0.8, the first channel 0.6.
    stereo = np.stack([0.6 * sine, 0.2 * sine], axis=1).astype(np.float32)
    _write(folder / "sine.wav", stereo, 44100, subtype="FLOAT")
    result = prepare_noise_banks(
        folder, tmp_path / "banks", segment_seconds=1.0, adapt_minutes=0.05, test_bank=False
    )
    assert result["noise_test"] is None
    segments = [soundfile.read(row[2])[0] for row in _read_csv(result["noise_adapt"])[1]]
    assert [len(s) for s in segments] == [SR, SR, SR]
    audio = np.concatenate(segments)
    middle = segments[1]  # 1 s: 1 Hz bins
    assert np.argmax(np.abs(np.fft.rfft(middle))) == 440
    assert np.sqrt(2 * np.mean(middle**2)) == pytest.approx(0.4, rel=2e-3)
    # Streaming gives what one resample call over the whole downmixed file gives.
    whole = resample(torch.from_numpy(stereo.mean(axis=1)), 44100, SR).numpy()
    np.testing.assert_allclose(audio, whole, atol=1e-6)


@pytest.mark.parametrize("orig", [44100, 48000, 22050, 11025, 8000, 32000, 16000])
def test_streaming_resampler_matches_one_call(orig):
    rng = np.random.default_rng(orig)
    x = rng.normal(0, 0.3, 30011).astype(np.float32)
    sizes = rng.integers(1, 4000, 100)
    cuts = np.cumsum(sizes)[np.cumsum(sizes) < len(x)]
    blocks = np.split(x, cuts)
    streamed = np.concatenate(list(_resample_stream(iter(blocks), orig, SR)))
    whole = resample(torch.from_numpy(x), orig, SR).numpy()
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_plan_cuts_within_recordings_and_keeps_long_remainders():
    plan = _plan([23, 26, 4, 30], adapt_len=40, seg_len=10, test_bank=True)
    # Recording 1 straddles the boundary at 40: its first 17 samples adapt, the rest tests.
    assert plan["adapt"] == [(0, 0, 10), (0, 10, 10), (1, 0, 10), (1, 10, 7)]
    # Recording 1's last 9 samples make a segment (half or more); recording 2's 4 do not.
    assert plan["test"] == [(1, 17, 9), (3, 0, 10), (3, 10, 10), (3, 20, 10)]
    assert _plan([23, 26], adapt_len=40, seg_len=10, test_bank=False)["test"] == []


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        prepare_noise_banks(tmp_path / "nowhere", tmp_path / "out", segment_seconds=1.0)
    assert str(tmp_path / "nowhere") in str(err.value) and "FLAC" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no file") as err:
        prepare_noise_banks(tmp_path / "empty", tmp_path / "out", segment_seconds=1.0)
    assert "WAV" in str(err.value)


def test_folder_without_a_readable_file(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    (folder / "notes.txt").write_text("recorded on the 3rd")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + bytes(100))
    with pytest.raises(ValueError, match="holds no usable noise recording") as err:
        prepare_noise_banks(folder, tmp_path / "out", segment_seconds=1.0, drop_bad_files=True)
    message = str(err.value)
    assert str(folder) in message
    assert str(folder / "notes.txt") in message and str(folder / "broken.wav") in message
    assert "Format not recognised" in message and "WAV" in message and "FLAC" in message


@pytest.fixture
def folder_with_bad_files(tmp_path):
    folder = tmp_path / "recordings"
    _write(folder / "good1.wav", _noise(1, 2.0, SR), SR)
    _write(folder / "good2.flac", _noise(2, 2.0, 48000, channels=2), 48000)
    (folder / "corrupt.wav").write_bytes(bytes(np.random.default_rng(0).integers(0, 255, 999)))
    _write(folder / "empty.wav", np.zeros((0, 1), np.float32), SR)
    _write(folder / "quiet" / "silent.flac", np.full((SR, 2), 5e-5, np.float32), SR)
    flac = (folder / "good2.flac").read_bytes()
    (folder / "truncated.flac").write_bytes(flac[: len(flac) // 2])
    bad = ["corrupt.wav", "empty.wav", "quiet/silent.flac", "truncated.flac"]
    return folder, [str(folder / name) for name in bad]


def test_bad_files_are_all_reported(folder_with_bad_files, tmp_path):
    folder, bad = folder_with_bad_files
    with pytest.raises(ValueError) as err:
        prepare_noise_banks(folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.04)
    message = str(err.value)
    assert "4 file(s)" in message and str(folder) in message
    for path in bad:
        assert path in message
    assert "empty (0 frames)" in message and "silent" in message and "corrupt" in message
    assert "Fix or remove them, or run with --drop_bad_rows True to skip them." in message
    assert "drop_bad_files" not in message.replace(str(tmp_path), "")
    assert not (tmp_path / "out").exists(), "nothing is written when refusing"


def test_drop_bad_files_skips_and_reports_them(folder_with_bad_files, tmp_path, caplog):
    folder, bad = folder_with_bad_files
    before = _snapshot(folder)
    with caplog.at_level(logging.WARNING, logger="ctsl_brain.noise_prep"):
        result = prepare_noise_banks(
            folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.04, drop_bad_files=True
        )
    assert [entry.split(": ")[0] for entry in result["dropped"]] == bad
    assert all(path in caplog.text for path in bad)
    # good1.wav's 2 s; good2.flac's first 0.4 s (under half a segment) is dropped, the rest
    # (1.6 s: 1 + 0.6) is the test bank.
    assert result["adapt_seconds"] == pytest.approx(2.0)
    assert result["test_seconds"] == pytest.approx(1.6)
    assert _snapshot(folder) == before
    # The stamp keeps the list for the calls that find everything up to date.
    again = prepare_noise_banks(
        folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.04, drop_bad_files=True
    )
    assert again == result


def test_too_little_audio_for_the_adaptation_bank(tmp_path):
    folder = tmp_path / "recordings"
    _write(folder / "short.wav", _noise(0, 10.0, 8000), 8000)
    with pytest.raises(ValueError) as err:
        prepare_noise_banks(folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.5)
    message = str(err.value)
    assert f"noise folder {folder} holds 10 s of audio; the adaptation bank needs 30 s" in message
    assert "add recordings or lower --adapt_noise_minutes" in message
    assert "31 s in all" in message and "--recorded_test_folders" in message
    _write(folder / "short.wav", _noise(0, 65.0, 8000), 8000)
    with pytest.raises(ValueError, match="holds 1 min 5 s of audio; .* needs 2 min"):
        prepare_noise_banks(folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=2)


def test_no_audio_left_for_the_test_bank(tmp_path):
    folder = tmp_path / "recordings"
    _write(folder / "a.wav", _noise(0, 3.4, SR), SR)
    with pytest.raises(ValueError) as err:
        prepare_noise_banks(folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.05)
    message = str(err.value)
    assert str(folder) in message and "holds 3.4 s of audio" in message
    assert "0.4 s remain for the held-out test bank" in message
    assert "needs at least 0.6 s more audio" in message
    assert "with recorded noisy test sets, --recorded_test_folders, no held-out" in message
    _write(folder / "a.wav", _noise(0, 3.0, SR), SR)
    with pytest.raises(ValueError, match="nothing remains .* at least 1 s more audio"):
        prepare_noise_banks(folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.05)
    result = prepare_noise_banks(
        folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.05, test_bank=False
    )
    assert result["noise_test"] is None and result["test_seconds"] == 0.0
    assert not (tmp_path / "out" / "noise_test.csv").exists()


def test_recordings_shorter_than_half_a_segment(tmp_path):
    folder = tmp_path / "recordings"
    _write(folder / "a.wav", _noise(0, 0.3, SR), SR)
    _write(folder / "b.wav", _noise(1, 0.4, SR), SR)
    with pytest.raises(ValueError) as err:
        prepare_noise_banks(folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.005)
    message = str(err.value)
    assert "shorter than half a noise segment" in message and str(folder) in message
    assert f"the longest, {folder / 'b.wav'}, lasts 0.4 s" in message
    assert "segments are 1 s long" in message and "at least 0.5 s" in message
    # Long enough recordings, but an adaptation bank too short for half a segment.
    _write(folder / "b.wav", _noise(1, 3.0, SR), SR)
    with pytest.raises(ValueError, match="first 0.18 s .* yields no noise segment"):
        prepare_noise_banks(folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.003)


def test_output_folder_inside_the_noise_folder_is_refused(mixed_folder):
    with pytest.raises(ValueError, match="lies inside noise folder"):
        prepare_noise_banks(mixed_folder, mixed_folder / "banks", segment_seconds=1.0)


def test_skip_when_up_to_date_and_redo_on_changes(mixed_folder, tmp_path):
    out = tmp_path / "banks"
    options = {"segment_seconds": 1.0, "adapt_minutes": 0.05}
    first = prepare_noise_banks(mixed_folder, out, **options)
    mtimes = _output_mtimes(out)
    assert prepare_noise_banks(mixed_folder, out, **options) == first
    assert _output_mtimes(out) == mtimes, "an up-to-date call rewrote files"

    # A changed input file: prepared again, with its new content.
    stamp = out / "noise_banks.json"
    stamp_mtime = os.stat(stamp).st_mtime_ns
    _write(mixed_folder / "sub" / "d.wav", _noise(9, 2.0, SR), SR, subtype="FLOAT")
    os.utime(mixed_folder / "sub" / "d.wav", ns=(stamp_mtime + 10**9, stamp_mtime + 10**9))
    prepare_noise_banks(mixed_folder, out, **options)
    assert os.stat(stamp).st_mtime_ns != stamp_mtime
    last = soundfile.read(_read_csv(out / "noise_test.csv")[1][-1][2], dtype="float32")[0]
    np.testing.assert_array_equal(last, _noise(9, 2.0, SR)[SR:, 0])

    # Changed options: prepared again, and no segment of the earlier preparation is left over.
    stamp_mtime = os.stat(stamp).st_mtime_ns
    second = prepare_noise_banks(mixed_folder, out, segment_seconds=2.0, adapt_minutes=0.05)
    assert os.stat(stamp).st_mtime_ns != stamp_mtime
    for bank in ("adapt", "test"):
        rows = _read_csv(second[f"noise_{bank}"])[1]
        assert sorted(os.listdir(out / f"noise_{bank}")) == sorted(f"{r[0]}.wav" for r in rows)

    # Without a test bank, the earlier one is removed: it may overlap the new adaptation bank.
    third = prepare_noise_banks(mixed_folder, out, test_bank=False, **options)
    assert third["noise_test"] is None
    assert not (out / "noise_test.csv").exists() and not (out / "noise_test").exists()

    # A deleted output is noticed.
    os.remove(_read_csv(out / "noise_adapt.csv")[1][0][2])
    prepare_noise_banks(mixed_folder, out, test_bank=False, **options)
    assert all(os.path.isfile(row[2]) for row in _read_csv(out / "noise_adapt.csv")[1])
