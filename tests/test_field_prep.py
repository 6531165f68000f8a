"""Noise from field recordings: speech found as silero-vad finds it, precision and recall on
recordings with known speech, rates and channels, digital silence, errors, caching, memory."""

import csv
import logging
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile
import torch
from ctsl_brain.dataio import DataError, MissingInputError, SettingsError
from ctsl_brain.demo.speech import (
    draw_labels,
    draw_voice,
    rms,
    synthesize_speech,
)
from ctsl_brain.noise_banks import (
    field as field_prep,
    reading as noise_reading,
)
from ctsl_brain.noise_banks.field import (
    extract_field_noise,
    noise_stretches,
    speech_spans,
)
from recipe_run import ROOT, folder_snapshot
from scipy.signal import lfilter
from torchaudio.functional import resample

SR = 16000
LOGGER = "ctsl_brain.noise_banks.field"
# Utterances (start, length) in seconds of the main field recording, of 40 s.
UTTERANCES = [(2, 3), (8, 2.5), (13, 4), (20, 2), (25.5, 3), (33, 3.5)]
FIELD_SECONDS = 40
MARGIN, MIN_STRETCH = 0.5, 1.0


@pytest.fixture(autouse=True)
def _one_thread():
    """The detector on one thread, as measured; the count is restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _background(seed, seconds, sample_rate):
    """Red noise and a 100 Hz hum with harmonics (a ventilation, an engine), at -30 dBFS."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    noise = lfilter([1.0], [1.0, -0.95], rng.standard_normal(n))
    t = np.arange(n) / sample_rate
    hum = sum(0.5**k * np.sin(2 * np.pi * 100 * (k + 1) * t) for k in range(4))
    mix = noise / rms(noise) + 0.5 * hum / rms(hum)
    return mix / rms(mix) * 10 ** (-30 / 20)


def _utterance(seed, seconds, sample_rate):
    """A synthetic utterance at -20 dBFS."""
    rng = np.random.default_rng(seed)
    speech = synthesize_speech(
        rng,
        draw_voice(rng, female=seed % 2 == 0),
        draw_labels(rng),
        n_samples=round(seconds * sample_rate),
        sample_rate=sample_rate,
    )
    return speech / rms(speech) * 0.1


def _field(seed, seconds, sample_rate, utterances):
    """A field recording: the background with utterances at known times."""
    audio = _background(seed, seconds, sample_rate)
    for k, (start, length) in enumerate(utterances):
        speech = _utterance(1000 * seed + k, length, sample_rate)
        at = round(start * sample_rate)
        audio[at : at + len(speech)] += speech
    return audio.astype(np.float32)


def _write(path, audio, sample_rate):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, sample_rate)


def _stretches(result):
    """``(file, start, end)`` of each row of the manifest."""
    with open(result["manifest"], newline="") as f:
        return [
            (row["file"], float(row["start"]), float(row["end"]))
            for row in csv.DictReader(f)
        ]


def _overlap(spans, others):
    return sum(
        max(0.0, min(e, oe) - max(s, os_))
        for s, e in spans
        for os_, oe in others
    )


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """The same field recording at 16 kHz mono and at 44.1 kHz stereo, each in its folder,
    the noise extracted from each."""
    root = tmp_path_factory.mktemp("field")
    mono = _field(1, FIELD_SECONDS, SR, UTTERANCES)
    _write(root / "mono" / "room" / "take1.wav", mono, SR)
    # The same recording at 44.1 kHz (resampled: the same sound, not a new draw).
    high = resample(torch.from_numpy(mono), SR, 44100).numpy()
    _write(
        root / "stereo" / "take1.flac", np.stack([high, 0.8 * high], 1), 44100
    )
    before = folder_snapshot(root / "mono")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = {
        name: extract_field_noise(
            root / name,
            root / f"out_{name}",
            margin_seconds=MARGIN,
            min_stretch_seconds=MIN_STRETCH,
            foreground_db=None,  # the detector alone; the gate is tested below
        )
        for name in ("mono", "stereo")
    }
    torch.set_num_threads(threads)
    return {"root": root, "audio": mono, "before": before, **results}


def test_speech_spans_are_silero_vads_on_known_probabilities():
    pytest.importorskip("silero_vad")
    probs = (
        [0.0] * 4  # no speech
        + [0.6] * 10  # speech starts at chunk 4
        + [0.4] * 5  # between the thresholds (0.5 and 0.35): speech goes on
        + [0.2] * 2  # a pause of 64 ms, under 100 ms: speech goes on
        + [0.7] * 10
        + [0.0] * 10  # a pause of 100 ms or more: speech ends at chunk 31
        + [0.9] * 4  # 128 ms of speech, under 250 ms: ignored
        + [0.0] * 10
        + [0.5]
        * 10  # at the threshold: speech, running to the end of the stream
    )
    length = len(probs) * 512 - 100
    assert speech_spans(probs, length) == [
        (4 * 512, 31 * 512),
        (55 * 512, length),
    ]
    assert speech_spans(
        np.array(probs, np.float32), length, threshold=0.65
    ) == [(21 * 512, 31 * 512)]
    # Compared in double precision: a float32 0.7 is a little under 0.7.
    assert (
        speech_spans(np.full(20, 0.7, np.float32), 20 * 512, threshold=0.7)
        == []
    )


def test_noise_stretches_leave_margins_silence_and_short_stretches_out(
    monkeypatch,
):
    length = 20 * SR
    speech = [(2 * SR, 3 * SR), (5 * SR, 6 * SR)]
    silence = [(10 * SR, 11 * SR)]
    stretches = noise_stretches(
        speech,
        silence,
        length,
        margin_seconds=0.5,
        min_stretch_seconds=1.0,
    )
    # 3.5-4.5 s between the two speeches is 1 s: kept; the silence splits 6.5-20 s.
    assert stretches == [(0, 1500), (3500, 4500), (6500, 10000), (11000, 20000)]
    assert noise_stretches(
        speech, silence, length, margin_seconds=0.6, min_stretch_seconds=1.0
    ) == [(0, 1400), (6600, 10000), (11000, 20000)]
    monkeypatch.setattr(field_prep, "_MAX_STRETCH_SECONDS", 4)
    assert noise_stretches(
        [], [], 9 * SR + 5, margin_seconds=0.5, min_stretch_seconds=1.0
    ) == [(0, 3000), (3000, 6000), (6000, 9000)]


def test_kept_audio_is_noise_and_covers_the_pauses(field):
    result = field["mono"]
    stretches = _stretches(result)
    assert {name for name, *_ in stretches} == {"room/take1.wav"}
    kept = [(s, e) for _, s, e in stretches]
    speech = [(s, s + n) for s, n in UTTERANCES]
    kept_seconds = sum(e - s for s, e in kept)
    # Precision: the kept audio lies outside the true speech.
    precision = 1 - _overlap(kept, speech) / kept_seconds
    assert precision >= 0.95
    # Recall: of the pauses that can be kept (at least MIN_STRETCH once MARGIN is left on
    # each side of speech), the share kept.
    edges = [0.0] + [t for s, e in speech for t in (s, e)] + [FIELD_SECONDS]
    keepable = []
    for gap_start, gap_end in zip(edges[::2], edges[1::2], strict=False):
        start = gap_start + (MARGIN if gap_start > 0 else 0)
        end = gap_end - (MARGIN if gap_end < FIELD_SECONDS else 0)
        if end - start >= MIN_STRETCH:
            keepable.append((start, end))
    recall = _overlap(kept, keepable) / sum(e - s for s, e in keepable)
    assert recall >= 0.8
    print(f"precision {precision:.4f}, recall {recall:.4f}")
    figures = result["files"][0]
    assert figures["file"] == "room/take1.wav"
    assert figures["kept_seconds"] == pytest.approx(kept_seconds)
    assert result["kept_seconds"] == pytest.approx(kept_seconds)
    assert result["total_seconds"] == FIELD_SECONDS
    # The synthetic utterances hold short pauses: speech is most of them, not all.
    assert 0.7 * 17 < result["speech_seconds"] < 17 + 1
    assert result["warnings"] == [] and result["dropped"] == []


def test_stretches_are_the_recordings_audio(field):
    result = field["mono"]
    with open(result["manifest"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(os.listdir(result["stretch_folder"])) == sorted(
        os.path.basename(row["wav"]) for row in rows
    )
    recording, _ = soundfile.read(
        field["root"] / "mono" / "room" / "take1.wav", dtype="float32"
    )
    for row in rows:
        audio, rate = soundfile.read(row["wav"], dtype="float32")
        start, end = (round(float(row[k]) * SR) for k in ("start", "end"))
        assert rate == SR
        assert float(row["seconds"]) == pytest.approx(
            float(row["end"]) - float(row["start"])
        )
        np.testing.assert_array_equal(audio, recording[start:end])
        name = os.path.basename(row["wav"])
        assert name == (
            f"room__take1.wav_{round(start / 16):09d}-{round(end / 16):09d}.wav"
        )


def test_talk_in_the_background_is_noise_of_the_place(tmp_path):
    """Chatter at the level of the background (a waiting room's) is kept as noise; the
    people talking in the foreground, 10 dB above it, are left out. Without the foreground
    gate the detector takes the chatter for speech too, and little noise is left."""
    seconds = 40
    chatter = sum(
        np.resize(_utterance(50 + k, 3.0 + k, SR), seconds * SR)
        for k in range(4)
    )
    audio = _background(7, seconds, SR) + chatter / rms(chatter) * 10 ** (
        -30 / 20
    )
    for k, (start, length) in enumerate(UTTERANCES):
        speech = _utterance(70 + k, length, SR) * 10 ** (-10 / 20) * 3
        at = round(start * SR)
        audio[at : at + len(speech)] += speech
    _write(tmp_path / "field" / "room.wav", audio.astype(np.float32), SR)
    truth = [(start, start + length) for start, length in UTTERANCES]
    pauses = seconds - sum(length for _, length in UTTERANCES)
    found = {}
    for gate in (3.0, None):
        result = extract_field_noise(
            tmp_path / "field",
            tmp_path / f"out_{gate}",
            margin_seconds=0.3,
            foreground_db=gate,
            min_total_seconds=0,
        )
        spans = [(start, end) for _, start, end in _stretches(result)]
        kept = sum(end - start for start, end in spans)
        found[gate] = (kept - _overlap(spans, truth), kept)
    noise, kept = found[3.0]
    assert noise / kept >= 0.95, "foreground speech in the noise"
    assert noise / pauses >= 0.8, "background talk left out"
    assert found[None][0] / pauses < 0.5, "the detector alone keeps the chatter"


def test_rates_and_channels_give_the_same_stretches(field):
    mono = _stretches(field["mono"])
    stereo = _stretches(field["stereo"])
    assert len(mono) == len(stereo)
    differences = [
        abs(a - b)
        for m, s in zip(mono, stereo, strict=False)
        for a, b in zip(m[1:], s[1:], strict=False)
    ]
    print(f"largest difference: {max(differences):.3f} s")
    assert max(differences) <= 2 * 512 / SR + 0.001


def test_the_field_folder_is_not_modified(field):
    assert folder_snapshot(field["root"] / "mono") == field["before"]


def test_up_to_date_and_redone_when_options_or_inputs_change(
    field, tmp_path, monkeypatch, caplog
):
    root = field["root"]
    folder, output = root / "mono", tmp_path / "out"
    first = extract_field_noise(folder, output)
    stamp = output / field_prep.STAMP_FILE
    made = stamp.stat().st_mtime_ns

    def no_vad():
        """The detector must not run again."""
        raise AssertionError("the detector ran again")

    monkeypatch.setattr(field_prep, "load_vad", no_vad)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        again = extract_field_noise(folder, output)
    assert again == first and stamp.stat().st_mtime_ns == made
    assert "(up to date)" in caplog.text
    # Other options: cut again from the cached probabilities, stale stretches removed.
    wider = extract_field_noise(
        folder, output, margin_seconds=1.0, sample_rate=8000
    )
    assert wider != first and stamp.stat().st_mtime_ns != made
    assert wider["kept_seconds"] < first["kept_seconds"]
    rows = _rows(wider["manifest"])
    names = {os.path.basename(row[-1]) for row in rows}
    assert set(os.listdir(wider["stretch_folder"])) == names
    for row in rows:
        info = soundfile.info(row[-1])
        assert info.samplerate == 8000
        assert info.frames == pytest.approx(float(row[3]) * 8000, abs=1)
    # A new file is detected, the stretches of a file no longer there are removed.
    monkeypatch.undo()
    other = tmp_path / "other"
    _write(other / "b.wav", field["audio"][: 12 * SR], SR)
    changed = extract_field_noise(other, output, min_total_seconds=1)
    assert {name for name, *_ in _stretches(changed)} == {"b.wav"}
    assert all(
        name.startswith("b.wav_")
        for name in os.listdir(changed["stretch_folder"])
    )
    assert os.listdir(output / field_prep.VAD_FOLDER) == ["b.wav.npz"]


def _rows(manifest):
    with open(manifest, newline="") as f:
        return list(csv.reader(f))[1:]


def test_digital_silence_is_left_out(field, tmp_path):
    audio = field["audio"].copy()
    # A pause of the recorder, inside the last pause in speech (36.5-40 s).
    audio[round(38.2 * SR) : round(38.8 * SR)] = 0.0
    _write(tmp_path / "field" / "a.wav", audio, SR)
    result = extract_field_noise(tmp_path / "field", tmp_path / "out")
    kept = [(s, e) for _, s, e in _stretches(result)]
    assert _overlap(kept, [(38.2, 38.8)]) == 0
    # Split in two: 37-38.2 s and 38.8-40 s, the chunk on each side of the silence left out.
    assert len(kept) == len(UTTERANCES) + 2
    assert kept[-2][1] > 38.2 - 0.07 and kept[-1] == (
        pytest.approx(38.8, abs=0.07),
        40,
    )
    assert result["files"][0]["silent_seconds"] == pytest.approx(0.6, abs=0.07)


def test_a_long_recording_is_read_in_blocks(tmp_path, monkeypatch):
    seconds = 300
    rng = np.random.default_rng(5)
    audio = (rng.standard_normal(seconds * SR) * 0.03).astype(np.float32)
    for start in (30, 140, 250):
        audio[start * SR : (start + 3) * SR] += _utterance(start, 3, SR)
    _write(tmp_path / "field" / "long.wav", audio, SR)
    del audio
    monkeypatch.setattr(noise_reading, "_READ_FRAMES", 1 << 13)
    largest = {"read": 0, "write": 0}
    read, write = soundfile.SoundFile.read, soundfile.SoundFile.write

    def spy_read(self, *args, **kwargs):
        """Records the largest block read."""
        block = read(self, *args, **kwargs)
        largest["read"] = max(largest["read"], len(block))
        return block

    def spy_write(self, data):
        """Records the largest block written."""
        largest["write"] = max(largest["write"], len(data))
        return write(self, data)

    def whole_file(*args, **kwargs):
        """No file is read whole."""
        raise AssertionError("soundfile.read of a whole file")

    monkeypatch.setattr(soundfile.SoundFile, "read", spy_read)
    monkeypatch.setattr(soundfile.SoundFile, "write", spy_write)
    monkeypatch.setattr(soundfile, "read", whole_file)
    tracemalloc.start()
    try:
        result = extract_field_noise(tmp_path / "field", tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert largest["read"] <= 1 << 13 and 0 < largest["write"] <= 1 << 14
    # The file is 19 MB as float32; the stretches are minutes long.
    print(f"peak traced memory {peak / 1e6:.2f} MB")
    assert peak < 3e6, peak
    assert len(_stretches(result)) == 4
    assert result["kept_seconds"] > seconds - 3 * 6
    # Written piece by piece, the stretches are the recording's audio.
    monkeypatch.undo()
    recording, _ = soundfile.read(
        tmp_path / "field" / "long.wav", dtype="float32"
    )
    for _, start, end in _stretches(result):
        stretch = soundfile.read(
            os.path.join(
                result["stretch_folder"],
                f"long.wav_{round(start * 1000):09d}-{round(end * 1000):09d}.wav",
            ),
            dtype="float32",
        )[0]
        np.testing.assert_array_equal(
            stretch, recording[round(start * SR) : round(end * SR)]
        )


@pytest.mark.parametrize("content", [None, "notes"])
def test_a_folder_without_audio_is_named(tmp_path, content):
    folder = tmp_path / "field"
    folder.mkdir()
    if content:
        (folder / "notes.txt").write_text("clinic, Monday")
    with pytest.raises(DataError) as error:
        extract_field_noise(folder, tmp_path / "out")
    message = str(error.value)
    assert str(folder) in message
    assert ("notes.txt" in message) == bool(content)
    with pytest.raises(MissingInputError, match="does not exist"):
        extract_field_noise(tmp_path / "nowhere", tmp_path / "out")


def test_unusable_files_are_named_and_can_be_skipped(field, tmp_path, caplog):
    folder = tmp_path / "field"
    _write(folder / "good.wav", field["audio"], SR)
    (folder / "broken.wav").write_bytes(b"RIFF not really a wave file")
    _write(folder / "muted.wav", np.zeros(5 * SR, np.float32), SR)
    with pytest.raises(DataError) as error:
        extract_field_noise(folder, tmp_path / "out")
    message = str(error.value)
    assert "broken.wav" in message and "muted.wav" in message
    assert "silent" in message and "digital silence" in message
    assert "--drop_bad_rows True" in message
    assert not (tmp_path / "out").exists()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = extract_field_noise(
            folder, tmp_path / "out", drop_bad_files=True
        )
    assert len(result["dropped"]) == 2 and "broken.wav" in caplog.text
    assert {name for name, *_ in _stretches(result)} == {"good.wav"}


def test_only_silent_files_are_refused_as_silent(tmp_path):
    _write(tmp_path / "field" / "zeros.wav", np.zeros(3 * SR, np.float32), SR)
    with pytest.raises(DataError, match="no usable recording") as error:
        extract_field_noise(tmp_path / "field", tmp_path / "out")
    assert "zeros.wav" in str(error.value) and "silent" in str(error.value)


def _talk(seed, seconds):
    """Speech throughout: utterances one after the other over the background."""
    return _field(
        seed,
        seconds,
        SR,
        [(t, 2.5) for t in np.arange(0, seconds, 2.5)],
    )


def test_speech_throughout_is_named_with_its_figures(field, tmp_path, caplog):
    folder = tmp_path / "field"
    _write(folder / "talk.wav", _talk(3, 20), SR)
    with pytest.raises(DataError) as error:
        extract_field_noise(folder, tmp_path / "out")
    message = str(error.value)
    assert "no noise without speech" in message
    assert "talk.wav: 20 s," in message and "of speech" in message
    assert "nothing kept" in message and "--noise_folder" in message
    # With a recording that has pauses, the other is named in a warning.
    _write(folder / "waiting_room.wav", field["audio"], SR)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = extract_field_noise(folder, tmp_path / "out")
    assert {name for name, *_ in _stretches(result)} == {"waiting_room.wav"}
    assert len(result["warnings"]) == 1
    assert "talk.wav: 20 s," in result["warnings"][0]
    assert result["warnings"][0] in caplog.text
    # Too little in all is refused too.
    with pytest.raises(DataError, match="only .* under the 1 min needed"):
        extract_field_noise(folder, tmp_path / "out", min_total_seconds=60)


def test_settings_and_folders_are_checked(field, tmp_path, monkeypatch):
    folder = field["root"] / "mono"
    with pytest.raises(SettingsError, match="--field_vad_threshold"):
        extract_field_noise(folder, tmp_path / "out", threshold=1.0)
    with pytest.raises(SettingsError, match="--field_margin_seconds"):
        extract_field_noise(folder, tmp_path / "out", margin_seconds=-1)
    with pytest.raises(DataError, match="inside field folder"):
        extract_field_noise(folder, folder / "out")
    monkeypatch.setitem(sys.modules, "silero_vad", None)
    with pytest.raises(
        MissingInputError, match="pip install silero-vad==6.2.3"
    ):
        field_prep.load_vad()


def test_finding_speech_leaves_pytorch_on_its_threads():
    """silero-vad sets PyTorch to one thread when it is imported: a training that follows a
    field preparation in the same process keeps its threads (and computes as without one)."""
    probe = (
        "import torch; torch.set_num_threads(2); "
        "from ctsl_brain.noise_banks import field; field.load_vad(); "
        "print(torch.get_num_threads())"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["2"], done.stderr[-2000:]
