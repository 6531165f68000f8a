"""Noise banks from a folder of recordings: formats, order, disjointness, every sample used,
seams, errors, warnings, the report, caching."""

import csv
import json
import logging
import os

import numpy as np
import pytest
import soundfile
import torch
from ctsl_brain.dataio import DataError
from ctsl_brain.noise_banks import reading as noise_reading
from ctsl_brain.noise_banks.banks import prepare_noise_banks
from ctsl_brain.noise_banks.plan import bank_boundary, plan_bank, spans_between
from ctsl_brain.noise_banks.reading import resample_stream
from recipe_run import folder_snapshot
from torchaudio.functional import resample

SR = 16000
LOGGER = "ctsl_brain.noise_banks.banks"


def _noise(seed, seconds, sample_rate, channels=1, level=0.1):
    """Deterministic noise, distinct for each seed."""
    shape = (round(seconds * sample_rate), channels)
    return (np.random.default_rng(seed).normal(0, level, shape)).astype(
        np.float32
    )


def _write(path, audio, sample_rate, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".ogg":
        # libsndfile's Vorbis encoder is written in short pieces (large writes can crash it).
        channels = audio.shape[1] if audio.ndim > 1 else 1
        with soundfile.SoundFile(
            path, "w", sample_rate, channels, subtype="VORBIS"
        ) as f:
            for i in range(0, len(audio), sample_rate // 4):
                f.write(audio[i : i + sample_rate // 4])
    else:
        soundfile.write(path, audio, sample_rate, **kwargs)


def _read_csv(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        return next(reader), list(reader)


def _segments(csv_path):
    """The audio of a bank's segments, in the CSV's order."""
    return [
        soundfile.read(row[2], dtype="float32")[0]
        for row in _read_csv(csv_path)[1]
    ]


def _samples(seconds):
    return round(seconds * SR)


def _output_mtimes(folder):
    return {
        os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
        for root, _, files in os.walk(folder)
        for name in files
    }


def _assert_command_line_options(text, tmp_path):
    """Messages point to the recipe's command-line options, not to this function's arguments
    (the test's own folder, named after the test, is left out)."""
    text = text.replace(str(tmp_path), "")
    assert "drop_bad_files" not in text and "test_bank" not in text
    assert text.count("adapt_noise_minutes") == text.count(
        "--adapt_noise_minutes"
    )


@pytest.fixture
def mixed_folder(tmp_path):
    """Four recordings of mixed formats, rates and channel counts, one in a subfolder."""
    folder = tmp_path / "recordings"
    _write(folder / "a.wav", _noise(1, 2.5, 44100, channels=2), 44100)
    _write(folder / "b.flac", _noise(2, 2.2, 8000), 8000)
    _write(folder / "c.ogg", _noise(3, 3.0, 22050), 22050)
    _write(folder / "sub" / "d.wav", _noise(4, 2.0, SR), SR, subtype="FLOAT")
    return folder


def _continued(positions):
    """The positions that follow or are followed by their neighbour's, None for the others:
    a crossfaded sample can happen to equal an input sample, but not two in a row."""
    result = []
    for k, position in enumerate(positions):
        before = (
            k > 0
            and positions[k - 1] is not None
            and positions[k - 1] + 1 == position
        )
        after = k + 1 < len(positions) and positions[k + 1] is not None
        after = (
            after and position is not None and positions[k + 1] == position + 1
        )
        result.append(position if before or after else None)
    return result


def test_mixed_formats_give_16k_mono_banks(mixed_folder, tmp_path):
    before = folder_snapshot(mixed_folder)
    out = tmp_path / "banks"
    result = prepare_noise_banks(
        mixed_folder, out, segment_seconds=1.0, adapt_minutes=0.05
    )

    assert result["noise_adapt"] == str(out / "noise_adapt.csv")
    assert result["noise_test"] == str(out / "noise_test.csv")
    assert result["dropped"] == []
    totals = {}
    for bank in ("adapt", "test"):
        header, rows = _read_csv(result[f"noise_{bank}"])
        assert header == ["ID", "duration", "wav"]
        assert [row[0] for row in rows] == [
            f"{bank}_{i:04d}" for i in range(len(rows))
        ]
        totals[bank] = 0
        for _, duration, wav in rows:
            assert os.path.isabs(wav) and os.path.dirname(wav) == str(
                out / f"noise_{bank}"
            )
            info = soundfile.info(wav)
            assert (info.samplerate, info.channels, info.subtype) == (
                SR,
                1,
                "FLOAT",
            )
            assert float(duration) == pytest.approx(info.frames / SR, abs=1e-6)
            assert info.frames <= SR
            totals[bank] += info.frames
        assert result["banks"][bank]["seconds"] == totals[bank] / SR
    # a.wav (2.5 s) gives 1 + 1 s and a 0.5 s piece, joined to b.flac's first 0.5 s with a
    # 10 ms crossfade: 3 s of audio, 2.99 s of noise.
    assert totals["adapt"] == _samples(2.99)
    # b's last 1.7 s (1 s and a 0.7 s piece), c.ogg's 3 s, sub/d.wav's 2 s.
    assert totals["test"] == _samples(6.7)
    assert folder_snapshot(mixed_folder) == before, (
        "the noise folder was modified"
    )


def test_every_sample_goes_into_one_bank_the_first_minutes_into_adaptation(
    tmp_path, monkeypatch
):
    # Blocks much shorter than the recordings, so that parts and crossfades straddle blocks.
    monkeypatch.setattr(noise_reading, "_READ_FRAMES", 1000)
    folder = tmp_path / "recordings"
    # Float files at 16 kHz pass through unchanged, so every output sample outside a crossfade
    # is an input sample, found by its value. b.wav, c.wav and q.wav are shorter than half a
    # segment, m.wav straddles the boundary, and the lengths put the crossfade from b.wav into
    # c.wav across a segment cut.
    lengths = {
        "z.wav": 18400,
        "m/n.wav": 32000,
        "a.wav": 20800,
        "q.wav": 7200,
        "m.wav": 27200,
        "b.wav": 3400,
        "c.wav": 7000,
    }
    # Distinct values, so that each tells where it comes from.
    rng = np.random.default_rng(0)
    pool = rng.permutation(
        np.unique(rng.uniform(-0.5, 0.5, 200000).astype(np.float32))
    )
    starts = np.cumsum([0, *lengths.values()])[:-1]
    audio = {
        name: pool[start : start + lengths[name]]
        for name, start in zip(lengths, starts, strict=True)
    }
    for name, samples in audio.items():
        _write(folder / name, samples, SR, subtype="FLOAT")
    stream = np.concatenate(
        [audio[name] for name in sorted(lengths)]
    )  # sorted relative paths
    ends = np.cumsum([lengths[name] for name in sorted(lengths)])
    where = {value: i for i, value in enumerate(stream.tolist())}
    assert len(where) == len(stream)
    seg_len, adapt_len = _samples(0.5), _samples(2.6)

    result = prepare_noise_banks(
        folder, tmp_path / "banks", segment_seconds=0.5, adapt_minutes=2.6 / 60
    )
    cut_crossfade = False
    for bank, expected in (
        ("adapt", range(adapt_len)),
        ("test", range(adapt_len, len(stream))),
    ):
        used, joined = [], []
        segments = _segments(result[f"noise_{bank}"])
        for segment in segments:
            positions = [where.get(value) for value in segment.tolist()]
            first = positions[0]
            whole = None not in positions and positions == list(
                range(first, first + seg_len)
            )
            if whole:
                # A whole segment: one stretch of one recording.
                assert np.searchsorted(ends, first, "right") == np.searchsorted(
                    ends, first + seg_len - 1, "right"
                )
                used += positions
            else:
                joined.append(segment)
                cut_crossfade |= None in (positions[0], positions[-1])
        # The segments that join pieces follow one another in the joined audio.
        joined = np.concatenate(joined)
        positions = _continued([where.get(value) for value in joined.tolist()])
        assert None not in (positions[0], positions[-1])
        mixed, k = 0, 0
        while k < len(joined):
            if positions[k] is not None:
                # Within a piece, input samples follow one another: no hard join.
                assert (
                    k == 0
                    or positions[k - 1] is None
                    or positions[k] == positions[k - 1] + 1
                )
                used.append(positions[k])
                k += 1
                continue
            stop = k
            while positions[stop] is None:
                stop += 1
            # A crossfade: the samples after the piece before, fading out, and the samples
            # before the piece after, fading in, with equal power.
            n = stop - k
            fading_out, fading_in = positions[k - 1] + 1, positions[stop] - n
            angle = (np.arange(n) + 0.5) * (np.pi / 2 / n)
            expect = np.cos(angle) * stream[fading_out : fading_out + n]
            expect += np.sin(angle) * stream[fading_in : fading_in + n]
            np.testing.assert_allclose(
                joined[k:stop], expect, rtol=0, atol=1e-6
            )
            assert n == _samples(0.01)
            used += [
                *range(fading_out, fading_out + n),
                *range(fading_in, fading_in + n),
            ]
            mixed += n
            k = stop
        # Each input sample of the bank's part of the audio once, and none of the other bank's.
        assert sorted(used) == list(expected)
        figures = result["banks"][bank]
        assert _samples(figures["recorded_seconds"]) == len(expected)
        assert (
            _samples(figures["crossfade_seconds"])
            == mixed
            == figures["crossfades"] * _samples(0.01)
        )
        assert sum(len(s) for s in segments) == len(expected) - mixed
        assert sum(len(s) for s in segments) == _samples(figures["seconds"])
        # Only one segment of joined pieces may differ from seg_len: a last one of at least
        # half a segment, or one that took in a shorter tail.
        odd = [len(s) for s in segments if len(s) != seg_len]
        assert len(odd) <= 1 and all(
            seg_len <= 2 * n < 3 * seg_len for n in odd
        ), odd
    assert cut_crossfade, (
        "no crossfade straddles two segments: the test lost that case"
    )
    # Joined: a.wav's last 0.3 s, b.wav, c.wav and the 0.15 s of m.wav before the boundary
    # after a whole segment; m.wav's last 0.1125 s, q.wav and z.wav's last 0.15 s.
    assert result["banks"]["adapt"]["crossfades"] == 3
    assert result["banks"]["test"]["crossfades"] == 2
    assert (
        result["banks"]["adapt"]["recordings"],
        result["banks"]["test"]["recordings"],
    ) == (4, 4)


def test_short_files_clips_and_remainders_are_all_used(tmp_path):
    folder = tmp_path / "recordings"
    # 5-second 44.1 kHz stereo clips: 2 s segments leave 1 s of each. 0.3 s files: shorter
    # than half a segment.
    for k in range(3):
        _write(
            folder / f"clip{k}.wav", _noise(k, 5.0, 44100, channels=2), 44100
        )
    for k in range(4):
        _write(folder / f"short{k}.flac", _noise(10 + k, 0.3, 48000), 48000)
    result = prepare_noise_banks(
        folder, tmp_path / "banks", segment_seconds=2.0, adapt_minutes=0.1
    )
    adapt, test = result["banks"]["adapt"], result["banks"]["test"]
    # All the audio at 16 kHz, 16.2 s: exactly the 6 s asked to adapt, the rest to test.
    assert adapt["recorded_seconds"] == 6.0 and test[
        "recorded_seconds"
    ] == pytest.approx(10.2)
    assert _samples(adapt["recorded_seconds"]) + _samples(
        test["recorded_seconds"]
    ) == (3 * 5 * SR + 4 * _samples(0.3))
    # clip0 gives 2 + 2 s and a 1 s piece joined to clip1's first second; clip1's last 4 s
    # give 2 + 2 s, clip2 2 + 2 s and a 1 s piece joined to the four short files: 2.16 s, a
    # segment whose 0.16 s tail, too short to loop on its own, stays in it.
    assert (adapt["recordings"], adapt["segments"], adapt["crossfades"]) == (
        2,
        3,
        1,
    )
    assert (test["recordings"], test["segments"], test["crossfades"]) == (
        6,
        5,
        4,
    )
    for bank, figures in result["banks"].items():
        lengths = [len(s) for s in _segments(result[f"noise_{bank}"])]
        noise = _samples(figures["recorded_seconds"]) - figures[
            "crossfades"
        ] * _samples(0.01)
        assert sum(lengths) == noise == _samples(figures["seconds"])
        assert (
            sum(n != _samples(2.0) for n in lengths) <= 1
        )  # the joined pieces
    # The joined pieces of the test bank: 1 s + 4 x 0.3 s less four crossfades, 2.16 s.
    assert max(len(s) for s in _segments(result["noise_test"])) == _samples(
        2.16
    )


def test_joins_do_not_click(tmp_path):
    folder = tmp_path / "recordings"
    # Smooth noise: its samples change little from one to the next, so a hard join between two
    # recordings would jump by about the noise's amplitude, a click.
    window = np.hanning(64) / np.hanning(64).sum()
    recordings = []
    for k in range(6):
        smooth = np.convolve(
            _noise(k, 0.31, SR, level=1.0)[:, 0], window, "valid"
        )[: _samples(0.3)]
        recordings.append(smooth.astype(np.float32))
        _write(folder / f"{k}.wav", recordings[-1], SR, subtype="FLOAT")
    result = prepare_noise_banks(
        folder,
        tmp_path / "banks",
        segment_seconds=1.0,
        adapt_minutes=0.03,
        test_bank=False,
    )
    # All pieces: the bank is the joined audio, segment after segment.
    joined = np.concatenate(_segments(result["noise_adapt"]))
    assert result["banks"]["adapt"]["crossfades"] == 5
    assert len(joined) == 6 * _samples(0.3) - 5 * _samples(0.01)
    inside = max(np.abs(np.diff(r)).max() for r in recordings)
    hard = np.abs(np.diff(np.concatenate(recordings))).max()
    assert hard > 3 * inside, (
        "the recordings would not click when joined: the test lost its case"
    )
    assert np.abs(np.diff(joined)).max() <= inside


def _layout(bank):
    return [
        (
            length,
            [
                (p.recording, p.start, p.length, p.offset, p.ramp, p.ramp_start)
                for p in parts
            ],
        )
        for length, parts in bank.segments
    ]


def test_banks_cut_whole_segments_and_join_the_pieces_with_crossfades():
    sizes = {"seg_len": 10, "fade_len": 2}
    lengths = [23, 26, 4, 30]
    assert bank_boundary(lengths, adapt_len=40, **sizes, test_bank=True) == 40
    adapt = plan_bank(spans_between(lengths, 0, 40), **sizes)
    # Recording 1 straddles the boundary at 40: its first 17 samples adapt. What is left after
    # whole segments, 3 samples of recording 0 and 7 of recording 1, is joined; the crossfade
    # is 1 sample, half of the shorter piece, listed by where their first sample comes from.
    assert adapt.fades == [1] and adapt.recorded == 40 and adapt.recordings == 2
    assert _layout(adapt) == [
        (10, [(0, 0, 10, 0, None, 0)]),
        (10, [(0, 10, 10, 0, None, 0)]),
        (
            9,
            [
                (0, 20, 2, 0, None, 0),
                (0, 22, 1, 2, "out", 0),
                (1, 10, 1, 2, "in", 0),
                (1, 11, 6, 3, None, 0),
            ],
        ),
        (10, [(1, 0, 10, 0, None, 0)]),
    ]
    test = plan_bank(spans_between(lengths, 40, 83), **sizes)
    # Recording 1's last 9 samples and recording 2's 4, overlapping by 2: 11 samples, one
    # segment (a last one of 1 sample would be looped over and over by the mixer).
    assert test.fades == [2] and test.recorded == 43 and test.recordings == 3
    assert _layout(test) == [
        (
            11,
            [
                (1, 17, 7, 0, None, 0),
                (1, 24, 2, 7, "out", 0),
                (2, 0, 2, 7, "in", 0),
                (2, 2, 2, 9, None, 0),
            ],
        ),
        (10, [(3, 0, 10, 0, None, 0)]),
        (10, [(3, 10, 10, 0, None, 0)]),
        (10, [(3, 20, 10, 0, None, 0)]),
    ]
    # A crossfade across a segment cut: each segment gets its part of both ramps. The first
    # crossfade is 2 samples, half of the 5-sample piece.
    assert _layout(
        plan_bank(spans_between([5, 8, 9], 0, 22), seg_len=10, fade_len=3)
    ) == [
        (
            10,
            [
                (0, 0, 3, 0, None, 0),
                (0, 3, 2, 3, "out", 0),
                (1, 0, 2, 3, "in", 0),
                (1, 2, 3, 5, None, 0),
                (1, 5, 2, 8, "out", 0),
                (2, 0, 2, 8, "in", 0),
            ],
        ),
        (
            7,
            [
                (1, 7, 1, 0, "out", 2),
                (2, 2, 1, 0, "in", 2),
                (2, 3, 6, 1, None, 0),
            ],
        ),
    ]


def test_the_boundary_leaves_the_test_bank_a_segment():
    sizes = {"seg_len": 10, "fade_len": 2}
    # 23 samples, 40 asked: the test bank keeps its one segment, the adaptation bank the rest.
    assert bank_boundary([23], adapt_len=40, **sizes, test_bank=True) == 13
    assert bank_boundary([23], adapt_len=40, **sizes, test_bank=False) == 23
    # 15 samples cannot give two banks a segment each, 5 cannot give one.
    assert bank_boundary([15], adapt_len=40, **sizes, test_bank=True) is None
    assert bank_boundary([5], adapt_len=40, **sizes, test_bank=False) is None
    # An adaptation bank asked shorter than a segment is what was asked.
    assert bank_boundary([23], adapt_len=5, **sizes, test_bank=True) == 5
    # Fragmented audio, where crossfades take their share: the furthest boundary that leaves
    # the test bank a segment, as found by trying every one.
    rng = np.random.default_rng(0)
    for _ in range(40):
        lengths = rng.integers(1, 25, rng.integers(1, 8)).tolist()
        total = sum(lengths)

        def noise(start, stop, lengths=lengths):
            return plan_bank(
                spans_between(lengths, start, stop), **sizes
            ).length

        fits = [b for b in range(min(40, total) + 1) if noise(b, total) >= 10]
        expected = max(fits) if fits else None
        if expected is not None and expected < 40 and noise(0, expected) < 10:
            expected = None
        assert (
            bank_boundary(lengths, adapt_len=40, **sizes, test_bank=True)
            == expected
        ), lengths


def test_stereo_sine_is_downmixed_and_resampled(tmp_path):
    folder = tmp_path / "recordings"
    t = np.arange(3 * 44100) / 44100
    sine = np.sin(2 * np.pi * 440 * t)
    # Mean of the channels: 0.4; their sum would give 0.8, the first channel 0.6.
    stereo = np.stack([0.6 * sine, 0.2 * sine], axis=1).astype(np.float32)
    _write(folder / "sine.wav", stereo, 44100, subtype="FLOAT")
    result = prepare_noise_banks(
        folder,
        tmp_path / "banks",
        segment_seconds=1.0,
        adapt_minutes=0.05,
        test_bank=False,
    )
    assert result["noise_test"] is None
    segments = [
        soundfile.read(row[2])[0] for row in _read_csv(result["noise_adapt"])[1]
    ]
    assert [len(s) for s in segments] == [SR, SR, SR]
    audio = np.concatenate(segments)
    middle = segments[1]  # 1 s: 1 Hz bins
    assert np.argmax(np.abs(np.fft.rfft(middle))) == 440
    assert np.sqrt(2 * np.mean(middle**2)) == pytest.approx(0.4, rel=2e-3)
    # Streaming gives what one resample call over the whole downmixed file gives.
    whole = resample(torch.from_numpy(stereo.mean(axis=1)), 44100, SR).numpy()
    np.testing.assert_allclose(audio, whole, atol=1e-6)


@pytest.mark.parametrize(
    "orig", [44100, 48000, 22050, 11025, 8000, 32000, 16000]
)
def test_streaming_resampler_matches_one_call(orig):
    rng = np.random.default_rng(orig)
    x = rng.normal(0, 0.3, 30011).astype(np.float32)
    sizes = rng.integers(1, 4000, 100)
    cuts = np.cumsum(sizes)[np.cumsum(sizes) < len(x)]
    blocks = np.split(x, cuts)
    streamed = np.concatenate(list(resample_stream(iter(blocks), orig, SR)))
    whole = resample(torch.from_numpy(x), orig, SR).numpy()
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        prepare_noise_banks(
            tmp_path / "nowhere", tmp_path / "out", segment_seconds=1.0
        )
    assert str(tmp_path / "nowhere") in str(err.value) and "FLAC" in str(
        err.value
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no file") as err:
        prepare_noise_banks(
            tmp_path / "empty", tmp_path / "out", segment_seconds=1.0
        )
    assert "WAV" in str(err.value)


def test_folder_without_a_readable_file(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    (folder / "notes.txt").write_text("recorded on the 3rd")
    (folder / "broken.wav").write_bytes(
        b"RIFF\x00\x00\x00\x00WAVE" + bytes(100)
    )
    with pytest.raises(
        DataError, match="holds no usable noise recording"
    ) as err:
        prepare_noise_banks(
            folder, tmp_path / "out", segment_seconds=1.0, drop_bad_files=True
        )
    message = str(err.value)
    assert str(folder) in message
    assert (
        str(folder / "notes.txt") in message
        and str(folder / "broken.wav") in message
    )
    assert (
        "Format not recognised" in message
        and "WAV" in message
        and "FLAC" in message
    )


@pytest.fixture
def folder_with_bad_files(tmp_path):
    folder = tmp_path / "recordings"
    _write(folder / "good1.wav", _noise(1, 2.0, SR), SR)
    _write(folder / "good2.flac", _noise(2, 2.0, 48000, channels=2), 48000)
    (folder / "corrupt.wav").write_bytes(
        bytes(np.random.default_rng(0).integers(0, 255, 999))
    )
    _write(folder / "empty.wav", np.zeros((0, 1), np.float32), SR)
    _write(
        folder / "quiet" / "silent.flac", np.full((SR, 2), 5e-5, np.float32), SR
    )
    flac = (folder / "good2.flac").read_bytes()
    (folder / "truncated.flac").write_bytes(flac[: len(flac) // 2])
    bad = ["corrupt.wav", "empty.wav", "quiet/silent.flac", "truncated.flac"]
    return folder, [str(folder / name) for name in bad]


def test_bad_files_are_all_reported(folder_with_bad_files, tmp_path):
    folder, bad = folder_with_bad_files
    with pytest.raises(DataError) as err:
        prepare_noise_banks(
            folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.04
        )
    message = str(err.value)
    assert "4 file(s)" in message and str(folder) in message
    for path in bad:
        assert path in message
    assert (
        "empty (0 frames)" in message
        and "silent" in message
        and "corrupt" in message
    )
    assert (
        "Fix or remove them, or run with --drop_bad_rows True to skip them."
        in message
    )
    _assert_command_line_options(message, tmp_path)
    assert not (tmp_path / "out").exists(), "nothing is written when refusing"


def test_drop_bad_files_skips_and_reports_them(
    folder_with_bad_files, tmp_path, caplog
):
    folder, bad = folder_with_bad_files
    before = folder_snapshot(folder)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = prepare_noise_banks(
            folder,
            tmp_path / "out",
            segment_seconds=1.0,
            adapt_minutes=0.04,
            drop_bad_files=True,
        )
    assert [entry.split(": ")[0] for entry in result["dropped"]] == bad
    warning = next(
        r.message for r in caplog.records if r.levelno == logging.WARNING
    )
    assert warning.startswith(
        f"skipped 4 unusable file(s) of noise folder {folder}"
    )
    assert "(--drop_bad_rows True)" in warning and all(
        path in warning for path in bad
    )
    report = next(
        r.message for r in caplog.records if r.levelno == logging.INFO
    )
    assert (
        "left out: 4 unusable file(s), skipped (--drop_bad_rows True):"
        in report
    )
    assert all(f"    - {entry}" in report for entry in result["dropped"])
    _assert_command_line_options(caplog.text, tmp_path)
    # good1.wav's 2 s and good2.flac's first 0.4 s, a last, shorter segment; the rest of
    # good2.flac (1.6 s: 1 s and 0.6 s) is the test bank.
    assert result["banks"]["adapt"]["seconds"] == pytest.approx(2.4)
    assert result["banks"]["test"]["seconds"] == pytest.approx(1.6)
    assert folder_snapshot(folder) == before
    # The stamp keeps the list for the calls that find everything up to date.
    again = prepare_noise_banks(
        folder,
        tmp_path / "out",
        segment_seconds=1.0,
        adapt_minutes=0.04,
        drop_bad_files=True,
    )
    assert again == result


def test_less_audio_than_asked_gives_a_smaller_adaptation_bank_and_a_warning(
    tmp_path, caplog
):
    folder = tmp_path / "recordings"
    _write(folder / "short.wav", _noise(0, 10.0, 8000), 8000)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = prepare_noise_banks(
            folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.5
        )
    # 10 s where 30 s are asked: the held-out test bank keeps one segment, adaptation the rest.
    adapt, test = result["banks"]["adapt"], result["banks"]["test"]
    assert (adapt["recorded_seconds"], adapt["segments"]) == (9.0, 9)
    assert (test["recorded_seconds"], test["segments"]) == (1.0, 1)
    assert [r.message for r in caplog.records] == result["warnings"]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert (
        f"noise folder {folder} holds 0.17 min (10 s) of usable audio, less than the 0.5 min "
        "asked for the adaptation bank (--adapt_noise_minutes 0.5) and one 1 s segment for the "
        "held-out test bank: the adaptation bank has the first 9 s and the held-out test bank "
        f"the last 1 s. Add recordings of the target noise to {folder}, or set "
        "--adapt_noise_minutes 0.15 to ask for what there is."
    ) in result["warnings"]
    # One segment is a short test bank: the test mixtures will reuse it.
    assert (
        f"the held-out test bank from noise folder {folder} has 1 segment(s), 1 s of noise, "
        "under 10 segments (10 s): the noisy test mixtures will often reuse the same noise. Add "
        "recordings of the target noise (at least 9 s more), or lower --adapt_noise_minutes "
        "(now 0.5) to leave more of them to the test bank."
    ) in result["warnings"]
    _assert_command_line_options(caplog.text, tmp_path)
    # Asking for what there is: no warning about the adaptation bank.
    result = prepare_noise_banks(
        folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.15
    )
    assert result["banks"]["adapt"]["recorded_seconds"] == 9.0
    assert not any("less than" in message for message in result["warnings"])
    # Without a test bank, the adaptation bank has everything.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = prepare_noise_banks(
            folder,
            tmp_path / "out",
            segment_seconds=1.0,
            adapt_minutes=0.5,
            test_bank=False,
        )
    assert (
        result["banks"]["adapt"]["recorded_seconds"] == 10.0
        and "test" not in result["banks"]
    )
    assert caplog.records[0].message == (
        f"noise folder {folder} holds 0.17 min (10 s) of usable audio, less than the 0.5 min "
        "asked for the adaptation bank (--adapt_noise_minutes 0.5): the adaptation bank has all "
        f"of it. Add recordings of the target noise to {folder}, or set --adapt_noise_minutes "
        "0.16 to ask for what there is."
    )


def test_too_little_audio_for_a_segment_in_each_bank(tmp_path):
    folder = tmp_path / "recordings"
    _write(folder / "a.wav", _noise(0, 1.5, SR), SR)
    with pytest.raises(DataError) as err:
        prepare_noise_banks(
            folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.05
        )
    message = str(err.value)
    assert message == (
        f"noise folder {folder} holds 1.5 s of usable audio in 1 recording(s), too little for "
        "the noise banks: the adaptation bank and the held-out test bank need a 1 s noise "
        "segment each (a segment is a little longer than the longest utterance). Add recordings "
        "of the target noise there (at least 0.5 s more; one recording of 2 s or more always "
        "does); with recorded noisy test sets (--recorded_test_folders), no held-out test bank "
        "is needed"
    )
    _assert_command_line_options(message, tmp_path)
    assert not (tmp_path / "out").exists(), "nothing is written when refusing"
    # Without a test bank, 1.5 s make an adaptation bank (smaller than asked).
    result = prepare_noise_banks(
        folder,
        tmp_path / "out",
        segment_seconds=1.0,
        adapt_minutes=0.05,
        test_bank=False,
    )
    assert (
        result["noise_test"] is None
        and result["banks"]["adapt"]["recorded_seconds"] == 1.5
    )
    assert not (tmp_path / "out" / "noise_test.csv").exists()


def test_recordings_shorter_than_half_a_segment_are_joined(tmp_path):
    folder = tmp_path / "recordings"
    _write(folder / "a.wav", _noise(0, 0.3, SR), SR)
    _write(folder / "b.wav", _noise(1, 0.4, SR), SR)
    with pytest.raises(DataError) as err:
        prepare_noise_banks(
            folder,
            tmp_path / "out",
            segment_seconds=1.0,
            adapt_minutes=0.05,
            test_bank=False,
        )
    message = str(err.value)
    assert (
        f"noise folder {folder} holds 0.7 s of usable audio in 2 recording(s)"
        in message
    )
    assert "the adaptation bank needs a 1 s noise segment" in message
    assert (
        "at least 0.3 s more; one recording of 1 s or more always does"
        in message
    )
    # Six more 0.3 s recordings, 2.5 s in all: the first 1.2 s (a.wav, b.wav, c0.wav and
    # c1.wav's first 0.2 s) adapt, the rest tests; each bank is its pieces joined, in one
    # segment of a little more than 1 s (a tail that short is not a segment of its own).
    for k in range(6):
        _write(folder / f"c{k}.wav", _noise(2 + k, 0.3, SR), SR)
    result = prepare_noise_banks(
        folder, tmp_path / "out", segment_seconds=1.0, adapt_minutes=0.02
    )
    for bank, recorded, recordings in (("adapt", 1.2, 4), ("test", 1.3, 5)):
        figures = result["banks"][bank]
        assert (figures["recordings"], figures["segments"]) == (recordings, 1)
        assert figures["crossfades"] == recordings - 1
        assert figures["recorded_seconds"] == pytest.approx(recorded)
        assert figures["seconds"] == pytest.approx(
            recorded - 0.01 * (recordings - 1)
        )


def test_the_report_is_logged_and_returned(mixed_folder, tmp_path, caplog):
    out = tmp_path / "banks"
    options = {"segment_seconds": 1.0, "adapt_minutes": 0.05}
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = prepare_noise_banks(mixed_folder, out, **options)
    assert result["banks"] == {
        "adapt": {
            "recordings": 2,
            "segments": 3,
            "recorded_seconds": 3.0,
            "crossfades": 1,
            "crossfade_seconds": 0.01,
            "seconds": 2.99,
        },
        "test": {
            "recordings": 3,
            "segments": 7,
            "recorded_seconds": 6.7,
            "crossfades": 0,
            "crossfade_seconds": 0.0,
            "seconds": 6.7,
        },
    }
    assert result["unused_seconds"] == 0.0 and result["dropped"] == []
    assert [
        r.message for r in caplog.records if r.levelno == logging.WARNING
    ] == result["warnings"]
    assert (
        len(result["warnings"]) == 1
        and "has 7 segment(s)" in result["warnings"][0]
    )
    report = (
        f"noise banks from {mixed_folder} in {out}, segments of 1 s:\n"
        "  adaptation bank: 3 s of audio from 2 recording(s), 3 segment(s), 2.99 s of noise "
        "(1 crossfade(s): 0.01 s of overlap)\n"
        "  held-out test bank: 6.7 s of audio from 3 recording(s), 7 segment(s), 6.7 s of noise\n"
        "  left out: nothing"
    )
    assert [r.message for r in caplog.records if r.levelno == logging.INFO] == [
        report
    ]
    # Up to date: the same report, from the stamp.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert prepare_noise_banks(mixed_folder, out, **options) == result
    assert [r.message for r in caplog.records if r.levelno == logging.INFO] == [
        report.replace(f"in {out},", f"in {out} (up to date),")
    ]
    with open(out / "noise_banks.json") as f:
        stamped = json.load(f)["result"]
    assert {
        "noise_adapt": result["noise_adapt"],
        "noise_test": result["noise_test"],
        **stamped,
    } == result
    # Without a test bank, what follows the adaptation bank is left out, and said so.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = prepare_noise_banks(
            mixed_folder, out, **options, test_bank=False
        )
    assert result["unused_seconds"] == pytest.approx(6.7) and list(
        result["banks"]
    ) == ["adapt"]
    assert caplog.records[-1].message.endswith(
        "  left out: 6.7 s of audio after the adaptation bank (no held-out test bank is made when "
        "recorded noisy test sets are used, --recorded_test_folders)"
    )


def test_output_folder_inside_the_noise_folder_is_refused(mixed_folder):
    with pytest.raises(DataError, match="lies inside noise folder"):
        prepare_noise_banks(
            mixed_folder, mixed_folder / "banks", segment_seconds=1.0
        )


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
    _write(
        mixed_folder / "sub" / "d.wav", _noise(9, 2.0, SR), SR, subtype="FLOAT"
    )
    os.utime(
        mixed_folder / "sub" / "d.wav",
        ns=(stamp_mtime + 10**9, stamp_mtime + 10**9),
    )
    prepare_noise_banks(mixed_folder, out, **options)
    assert os.stat(stamp).st_mtime_ns != stamp_mtime
    last = soundfile.read(
        _read_csv(out / "noise_test.csv")[1][-1][2], dtype="float32"
    )[0]
    np.testing.assert_array_equal(last, _noise(9, 2.0, SR)[SR:, 0])

    # Changed options: prepared again, and no segment of the earlier preparation is left over.
    stamp_mtime = os.stat(stamp).st_mtime_ns
    second = prepare_noise_banks(
        mixed_folder, out, segment_seconds=2.0, adapt_minutes=0.05
    )
    assert os.stat(stamp).st_mtime_ns != stamp_mtime
    for bank in ("adapt", "test"):
        rows = _read_csv(second[f"noise_{bank}"])[1]
        assert sorted(os.listdir(out / f"noise_{bank}")) == sorted(
            f"{r[0]}.wav" for r in rows
        )

    # Without a test bank, the earlier one is removed: it may overlap the new adaptation bank.
    third = prepare_noise_banks(mixed_folder, out, test_bank=False, **options)
    assert third["noise_test"] is None
    assert (
        not (out / "noise_test.csv").exists()
        and not (out / "noise_test").exists()
    )

    # A deleted output is noticed.
    os.remove(_read_csv(out / "noise_adapt.csv")[1][0][2])
    prepare_noise_banks(mixed_folder, out, test_bank=False, **options)
    assert all(
        os.path.isfile(row[2]) for row in _read_csv(out / "noise_adapt.csv")[1]
    )
