"""MSP-Podcast preparation on a small fake release holding every kind of bad input."""

import csv
import hashlib
import json
import os

import numpy as np
import pytest
import soundfile
from corpus_prepare import prepare_corpus
from ctsl_brain.dataio import (
    AUDIO_ADVICE,
    DataError,
    MissingInputError,
    load_audio,
)
from msp_podcast_prepare import prepare_msp_podcast, write_manifests
from recipe_run import preparation_settings, run_train

HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"


def _speech(seconds, rate=16000, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(
        len(t)
    )
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def _release(root, extra_rows=(), extra_files=None):
    """A release with 4 train, 2 dev, 2 Test1 and 1 Test2 good rows, plus ``extra_rows``."""
    audios = root / "Audios"
    audios.mkdir(parents=True)
    (root / "Labels").mkdir()
    rows = []
    good = [("Train", 4), ("Development", 2), ("Test1", 2), ("Test2", 1)]
    n = 0
    for split, count in good:
        for _ in range(count):
            name = f"MSP-PODCAST_0001_{n:04d}.wav"
            soundfile.write(audios / name, _speech(1.0 + n / 10, seed=n), 16000)
            rows.append(
                f"{name},N,{3 + n % 3},{4.2},{2.6},{100 + n % 2},Female,{split}"
            )
            n += 1
    # Sample rate and channel count other than the recipe's are fine: resampled, downmixed.
    soundfile.write(
        audios / "stereo_44k.wav", _speech(1.5, rate=44100, channels=2), 44100
    )
    rows.append("stereo_44k.wav,N,5.0,3.0,4.4,7,Male,Train")
    for name, writer in (extra_files or {}).items():
        writer(audios / name)
    (root / "Labels" / "labels_consensus.csv").write_text(
        "\n".join([HEADER, *rows, *extra_rows]) + "\n"
    )
    return root


def _truncated(path):
    soundfile.write(path, _speech(1.0), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _with_sample(value, at=0.5):
    """Speech holding one NaN or infinite sample ``at`` seconds in (a float WAV keeps it)."""

    def write(path):
        speech = _speech(1.0)
        speech[int(at * 16000)] = value
        soundfile.write(path, speech, 16000, subtype="FLOAT")

    return write


def _folder(path):
    path.mkdir()
    soundfile.write(path / "take.wav", _speech(1.0), 16000)


BAD_FILES = {
    "unreadable.wav": lambda p: p.write_bytes(b"this is not audio at all" * 10),
    "truncated.wav": _truncated,
    "empty.wav": lambda p: soundfile.write(p, np.zeros(0), 16000),
    "silent.wav": lambda p: soundfile.write(p, np.zeros(16000), 16000),
    "short.wav": lambda p: soundfile.write(p, _speech(0.05), 16000),
    "nan.wav": _with_sample(np.nan),
    "inf.wav": _with_sample(-np.inf, at=0.25),
    "folder.wav": _folder,
    "link.wav": lambda p: p.symlink_to(p.parent / "moved.wav"),
    "ok_dup.wav": lambda p: soundfile.write(p, _speech(1.0), 16000),
    "ok_a.wav": lambda p: soundfile.write(p, _speech(1.0), 16000),
    "ok_b.wav": lambda p: soundfile.write(p, _speech(1.0), 16000),
    "ok_c.wav": lambda p: soundfile.write(p, _speech(1.0), 16000),
    "ok_d.wav": lambda p: soundfile.write(p, _speech(1.0), 16000),
}
BAD_ROWS = [
    "missing.wav,N,4,4,4,1,Male,Train",
    "unreadable.wav,N,4,4,4,1,Male,Train",
    "truncated.wav,N,4,4,4,1,Male,Development",
    "empty.wav,N,4,4,4,1,Male,Train",
    "silent.wav,N,4,4,4,1,Male,Test1",
    "short.wav,N,4,4,4,1,Male,Train",
    "nan.wav,N,4,4,4,1,Male,Train",
    "inf.wav,N,4,4,4,1,Male,Development",
    "folder.wav,N,4,4,4,1,Male,Train",
    "link.wav,N,4,4,4,1,Male,Test1",
    "ok_a.wav,N,,4,4,1,Male,Train",
    "ok_b.wav,N,high,4,4,1,Male,Train",
    "ok_c.wav,N,4,7.5,4,1,Male,Train",
    "ok_dup.wav,N,4,4,4,1,Male,Train",
    "ok_dup.wav,N,5,5,5,1,Male,Train",
    "ok_d.wav,N,4,4,4,1,Male,Validation",
]
EXPECTED_KINDS = [
    "missing audio",
    "unreadable audio",
    "truncated audio",
    "empty audio",
    "silent audio",
    "too short",
    "non-finite audio",
    "not a file",
    "broken link",
    "missing label",
    "non-numeric label",
    "label out of range",
    "duplicate ID",
    "unknown split",
]


def _rows(path):
    with open(path, newline="") as fin:
        return list(csv.DictReader(fin))


def _digest(folder):
    digest = hashlib.sha256()
    for base, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            path = os.path.join(base, name)
            if os.path.islink(path):
                digest.update(name.encode() + os.readlink(path).encode())
                continue
            with open(path, "rb") as fin:
                digest.update(name.encode() + fin.read())
    return digest.hexdigest()


def test_clean_release_gives_the_recipes_manifests(tmp_path):
    root = _release(tmp_path / "MSP")
    paths = write_manifests(str(root), str(tmp_path / "manifests"))
    train, dev, test = (_rows(paths[s]) for s in ("train", "dev", "test"))
    assert [len(train), len(dev), len(test)] == [
        5,
        2,
        2,
    ]  # Test2 is not the test set
    assert list(train[0]) == [
        "ID",
        "wav",
        "duration",
        "arousal",
        "dominance",
        "valence",
        "spk_id",
    ]
    first = train[0]
    assert first["ID"] == "MSP-PODCAST_0001_0000"
    assert first["wav"] == "$data_root/Audios/MSP-PODCAST_0001_0000.wav"
    # arousal = EmoAct, dominance = EmoDom, valence = EmoVal
    assert (first["arousal"], first["dominance"], first["valence"]) == (
        "3",
        "2.6",
        "4.2",
    )
    assert first["spk_id"] == "100"
    assert float(first["duration"]) == pytest.approx(1.0, abs=1e-3)
    stereo = next(r for r in train if r["ID"] == "stereo_44k")
    assert float(stereo["duration"]) == pytest.approx(1.5, abs=1e-3)
    signal = load_audio(str(root / "Audios" / "stereo_44k.wav"), 16000)
    assert signal.dim() == 1 and len(signal) == 24000

    other = write_manifests(str(root), str(tmp_path / "m2"), test_set="Test2")
    assert len(_rows(other["test"])) == 1


def test_every_problem_is_reported_before_training(tmp_path):
    root = _release(tmp_path / "MSP", BAD_ROWS, BAD_FILES)
    before = _digest(root)
    with pytest.raises(DataError) as caught:
        write_manifests(str(root), str(tmp_path / "manifests"))
    message = str(caught.value)
    for kind in EXPECTED_KINDS:
        assert f"{kind}: " in message, f"{kind} not reported:\n{message}"
    # Each kind of audio problem comes with what to do about it.
    for kind, advice in AUDIO_ADVICE.items():
        count = 2 if kind == "non-finite audio" else 1
        assert f"{kind}: {count}; {advice}\n" in message, kind
    assert "15 of 26 rows" in message
    assert "line 12 (missing.wav)" in message
    assert message.endswith(
        "or run again with --drop_bad_rows True to leave those rows out."
    )
    assert "ok_dup.wav is also on line" in message
    audios = root / "Audios"
    assert (
        f"line 18 (nan.wav): {audios / 'nan.wav'} holds NaN or infinite samples"
        in message
    )
    assert (
        f"line 19 (inf.wav): {audios / 'inf.wav'} holds NaN or infinite samples"
        in message
    )
    assert (
        "(the first at 0.500 s)" in message
        and "(the first at 0.250 s)" in message
    )
    assert (
        f"line 20 (folder.wav): {audios / 'folder.wav'} is a folder\n"
        in message
    )
    assert (
        f"{audios / 'link.wav'} links to {audios / 'moved.wav'}, which does not"
        in message
    )
    report = (tmp_path / "manifests" / "msp_podcast_problems.tsv").read_text()
    assert len(report.splitlines()) == 15
    assert not (tmp_path / "manifests" / "train.csv").exists()
    assert _digest(root) == before, "the release was modified"


def test_drop_bad_rows_leaves_them_out_and_says_how_many(tmp_path, caplog):
    root = _release(tmp_path / "MSP", BAD_ROWS, BAD_FILES)
    paths = write_manifests(
        str(root), str(tmp_path / "manifests"), drop_bad_rows=True
    )
    ids = {row["ID"] for split in paths.values() for row in _rows(split)}
    assert "ok_dup" in ids  # the first of the duplicates stays
    bad = {
        "missing",
        "unreadable",
        "truncated",
        "empty",
        "silent",
        "short",
        "nan",
        "inf",
    }
    assert not ids & (bad | {"folder", "link", "ok_a", "ok_b", "ok_c", "ok_d"})
    assert (
        len(ids) == 10
    )  # 8 good rows, the stereo one, the first ok_dup (Test2 is not used)
    assert "dropped 15 of 26 rows" in caplog.text


def test_skips_when_up_to_date_and_redoes_when_labels_change(tmp_path):
    root = _release(tmp_path / "MSP")
    manifests = tmp_path / "manifests"
    paths = write_manifests(str(root), str(manifests))
    stamp = os.stat(paths["train"]).st_mtime_ns
    write_manifests(str(root), str(manifests))
    assert os.stat(paths["train"]).st_mtime_ns == stamp
    labels = root / "Labels" / "labels_consensus.csv"
    labels.write_text(labels.read_text().replace(",Test2\n", ",Train\n"))
    paths = write_manifests(str(root), str(manifests))
    assert len(_rows(paths["train"])) == 6


def test_layout_errors_name_what_to_do(tmp_path):
    with pytest.raises(
        MissingInputError, match="--data_folder must be the root of an MSP-Podc"
    ):
        write_manifests(str(tmp_path), str(tmp_path / "m"))
    (tmp_path / "Labels").mkdir()
    (tmp_path / "Labels" / "labels_consensus.csv").write_text(
        "FileName,EmoAct\nx.wav,3\n"
    )
    with pytest.raises(DataError, match="lacks the column.*EmoVal"):
        write_manifests(str(tmp_path), str(tmp_path / "m"))
    with pytest.raises(ValueError, match="test_set"):
        write_manifests(str(tmp_path), str(tmp_path / "m"), test_set="Test4")


def _noise_folder(folder, seconds=(25.0, 20.0, 15.0)):
    """Noise recordings as users have them: 44.1 kHz stereo WAV and 22.05 kHz FLAC."""
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i, length in enumerate(seconds):
        rate = 44100 if i % 2 == 0 else 22050
        audio = 0.1 * rng.standard_normal((int(length * rate), 2))
        soundfile.write(
            folder / f"rec{i}.{'wav' if i % 2 == 0 else 'flac'}", audio, rate
        )
    return folder


@pytest.mark.slow
def test_train_py_prepares_and_trains_on_an_msp_podcast_release(tmp_path):
    root = _release(tmp_path / "MSP")
    noise = _noise_folder(tmp_path / "noise")
    results = tmp_path / "results"
    run_train(
        "hparams/teacher.yaml",
        results,
        "--data_folder",
        str(root),
        "--noise_folder",
        str(noise),
        "--adapt_noise_minutes",
        "0.5",
        "--test_snrs",
        "[5, 0]",
    )
    manifests = results / "msp_podcast" / "manifests"
    for name in (
        "train",
        "dev",
        "test",
        "noise_adapt",
        "noise_test",
        "test_5dB",
        "test_0dB",
    ):
        assert (manifests / f"{name}.csv").is_file(), name
    adapt = _rows(manifests / "noise_adapt.csv")
    assert sum(float(r["duration"]) for r in adapt) == pytest.approx(
        30.0, abs=3.0
    )
    with open(
        results / "msp_podcast" / "teacher" / "1986" / "test_results.json"
    ) as fin:
        assert list(json.load(fin)) == ["clean", "5dB", "0dB"]


def _hparams(tmp_path, root, noise_folder):
    return preparation_settings(tmp_path, root, noise_folder=noise_folder)


def test_noise_problems_stop_the_preparation(tmp_path):
    root = _release(tmp_path / "MSP")
    with pytest.raises(ValueError, match="noise_folder is not set"):
        prepare_corpus(_hparams(tmp_path, root, None))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no file"):
        prepare_corpus(_hparams(tmp_path, root, str(tmp_path / "empty")))
    short = _noise_folder(tmp_path / "short", seconds=(0.5, 0.4, 0.3))
    with pytest.raises(DataError, match="short holds 1.2 s of usable audio"):
        prepare_corpus(_hparams(tmp_path, root, str(short)))
    # Less than two segments (one per bank) of 2.7 s: the longest utterance and a second.
    few = _noise_folder(tmp_path / "few", seconds=(2.0, 1.5, 1.0))
    with pytest.raises(DataError, match="too little for the noise banks"):
        prepare_corpus(_hparams(tmp_path, root, str(few)))


def test_less_noise_than_asked_is_used_with_a_warning(tmp_path, caplog):
    root = _release(tmp_path / "MSP")
    little = _noise_folder(tmp_path / "little", seconds=(3.0, 2.0, 2.0))
    prepare_corpus(
        _hparams(tmp_path, root, str(little))
    )  # 7 s where 12 s are asked
    assert "less than the 0.2 min asked for the adaptation bank" in caplog.text
    assert "--adapt_noise_minutes" in caplog.text


def test_skip_prep_prepares_nothing(tmp_path):
    """SpeechBrain's skip_prep: no release, no noise and no manifest folder are touched."""
    hparams = _hparams(tmp_path, tmp_path / "no_release", None)
    hparams["skip_prep"] = True
    prepare_corpus(hparams)
    assert not (tmp_path / "manifests").exists()
    skipped = prepare_msp_podcast(
        str(tmp_path / "no_release"),
        str(tmp_path / "m"),
        noise_folder=None,
        skip_prep=True,
    )
    assert skipped is None and not (tmp_path / "m").exists()
