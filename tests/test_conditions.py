"""Noisy test conditions: simulated mixtures on disk with their SNRs, or recorded folders."""

import csv
import os
import shutil

import numpy as np
import pytest
import soundfile
from ctsl_brain.conditions import condition_names, prepare_test_conditions
from ctsl_brain.dataio import DataError, MissingInputError, load_audio


def _manifest_folder(tmp_path, demo_corpus):
    folder = tmp_path / "manifests"
    folder.mkdir(parents=True)
    shutil.copy(demo_corpus[1]["test"], folder / "test.csv")
    return str(folder)


def _rows(path):
    with open(path, newline="") as fin:
        return list(csv.DictReader(fin))


def test_simulated_conditions_store_their_snr(tmp_path, demo_corpus):
    data_folder, paths = demo_corpus
    manifests = prepare_test_conditions(
        _manifest_folder(tmp_path, demo_corpus),
        data_folder=data_folder,
        snrs=[10, 5, 0],
        noise_csv=paths["noise_test"],
        seed=3,
    )
    assert (
        list(manifests)
        == ["clean", "10dB", "5dB", "0dB"]
        == condition_names([10, 5, 0])
    )
    clean = _rows(manifests["clean"])
    for name, snr in (("10dB", 10), ("5dB", 5), ("0dB", 0)):
        rows = _rows(manifests[name])
        assert [r["ID"] for r in rows] == [r["ID"] for r in clean]
        for row, reference in zip(rows, clean, strict=True):
            assert abs(float(row["snr"]) - snr) < 0.5
            assert row["arousal"] == reference["arousal"] and os.path.isabs(
                row["wav"]
            )
            info = soundfile.info(row["wav"])
            assert info.samplerate == 16000 and info.channels == 1
            assert info.frames / 16000 == pytest.approx(
                float(row["duration"]), abs=1e-3
            )


def test_a_saved_mixture_meets_the_documented_definition(tmp_path, demo_corpus):
    """As the README says: mixture = (1 - f) * speech + noise, f = 1 / (10 ** (snr / 20) + 1),
    with the noise scaled so that 10 log10 of the power ratio of (1 - f) * speech to noise,
    over the utterance's own samples, is the SNR. The naive ratio of the clean speech to the
    mixture minus the clean speech is another number."""
    data_folder, paths = demo_corpus
    manifests = prepare_test_conditions(
        _manifest_folder(tmp_path, demo_corpus),
        data_folder=data_folder,
        snrs=[5, 0],
        noise_csv=paths["noise_test"],
        seed=3,
    )
    clean = {row["ID"]: row["wav"] for row in _rows(manifests["clean"])}
    for name, snr in (("5dB", 5), ("0dB", 0)):
        for row in _rows(manifests[name]):
            mixture, rate = soundfile.read(row["wav"], dtype="float64")
            speech = load_audio(
                clean[row["ID"]].replace("$data_root", data_folder), rate
            )
            speech = speech.double().numpy()
            assert len(mixture) == len(speech)
            f = 1 / (10 ** (snr / 20) + 1)
            noise = mixture - (1 - f) * speech
            achieved = 10 * np.log10(
                np.sum(((1 - f) * speech) ** 2) / np.sum(noise**2)
            )
            assert abs(achieved - snr) < 4e-4
            assert abs(float(row["snr"]) - achieved) < 1e-3
            naive = 10 * np.log10(
                np.sum(speech**2) / np.sum((mixture - speech) ** 2)
            )
            assert abs(naive - snr) > 0.5


def test_conditions_share_the_noise_excerpt_and_are_deterministic(
    tmp_path, demo_corpus
):
    data_folder, paths = demo_corpus
    first = prepare_test_conditions(
        _manifest_folder(tmp_path / "a", demo_corpus),
        data_folder=data_folder,
        snrs=[10, 0],
        noise_csv=paths["noise_test"],
        seed=3,
    )
    second = prepare_test_conditions(
        _manifest_folder(tmp_path / "b", demo_corpus),
        data_folder=data_folder,
        snrs=[0],
        noise_csv=paths["noise_test"],
        seed=3,
    )
    clean = _rows(first["clean"])[0]
    speech = load_audio(clean["wav"].replace("$data_root", data_folder)).numpy()
    a = soundfile.read(_rows(first["0dB"])[0]["wav"])[0]
    b = soundfile.read(_rows(second["0dB"])[0]["wav"])[0]
    np.testing.assert_array_equal(a, b)
    # The noise of 10 dB is the noise of 0 dB, scaled.
    noise_0 = a - 0.5 * speech
    f10 = 1 / (10 ** (10 / 20) + 1)
    noise_10 = (
        soundfile.read(_rows(first["10dB"])[0]["wav"])[0] - (1 - f10) * speech
    )
    correlation = np.corrcoef(noise_0, noise_10)[0, 1]
    assert correlation > 0.999


def test_simulated_conditions_are_written_once(tmp_path, demo_corpus):
    data_folder, paths = demo_corpus
    folder = _manifest_folder(tmp_path, demo_corpus)
    kwargs = dict(
        data_folder=data_folder, snrs=[0], noise_csv=paths["noise_test"], seed=1
    )
    manifest = prepare_test_conditions(folder, **kwargs)["0dB"]
    wav = _rows(manifest)[0]["wav"]
    stamps = os.stat(manifest).st_mtime_ns, os.stat(wav).st_mtime_ns
    prepare_test_conditions(folder, **kwargs)
    assert (os.stat(manifest).st_mtime_ns, os.stat(wav).st_mtime_ns) == stamps
    prepare_test_conditions(folder, **{**kwargs, "seed": 2})
    assert os.stat(wav).st_mtime_ns != stamps[1]


def test_missing_test_noise_is_a_clear_error(tmp_path, demo_corpus):
    with pytest.raises(
        MissingInputError,
        match="noise bank .* does not exist: the noisy test conditions",
    ):
        prepare_test_conditions(
            _manifest_folder(tmp_path, demo_corpus),
            data_folder=demo_corpus[0],
            snrs=[0],
            noise_csv=str(tmp_path / "none.csv"),
        )


def test_recorded_conditions_get_parallel_manifests(tmp_path, demo_corpus):
    data_folder, _ = demo_corpus
    folder = _manifest_folder(tmp_path, demo_corpus)
    recorded = tmp_path / "recorded_0dB"
    recorded.mkdir()
    clean = _rows(os.path.join(folder, "test.csv"))
    for row in clean:
        source = row["wav"].replace("$data_root", data_folder)
        shutil.copy(source, recorded / os.path.basename(source))
    manifests = prepare_test_conditions(
        folder, data_folder=data_folder, recorded={"0dB": str(recorded)}
    )
    assert (
        list(manifests) == ["clean", "0dB"] == condition_names([], {"0dB": "x"})
    )
    rows = _rows(manifests["0dB"])
    assert [r["ID"] for r in rows] == [r["ID"] for r in clean]
    assert all(r["wav"].startswith(str(recorded)) for r in rows)

    os.remove(recorded / os.path.basename(clean[2]["wav"]))
    # A folder where a recording should be is not a missing file.
    os.remove(recorded / os.path.basename(clean[3]["wav"]))
    os.mkdir(recorded / os.path.basename(clean[3]["wav"]))
    with pytest.raises(
        DataError, match=r"missing audio: 1; check the path\n"
    ) as caught:
        prepare_test_conditions(
            folder, data_folder=data_folder, recorded={"0dB": str(recorded)}
        )
    assert "not a file: 1; put the audio file itself at this path\n" in str(
        caught.value
    )
    manifests = prepare_test_conditions(
        folder,
        data_folder=data_folder,
        recorded={"0dB": str(recorded)},
        drop_bad_rows=True,
    )
    assert len(_rows(manifests["0dB"])) == len(clean) - 2
    with pytest.raises(MissingInputError, match="in --recorded_test_folders"):
        prepare_test_conditions(
            folder, data_folder=data_folder, recorded={"0dB": "absent"}
        )


def test_dev_conditions_sit_beside_the_test_conditions(tmp_path, demo_corpus):
    """Table 2's noisy dev sets: the same machinery with split="dev", its own files and noise."""
    data_folder, paths = demo_corpus
    folder = _manifest_folder(tmp_path, demo_corpus)
    shutil.copy(paths["dev"], os.path.join(folder, "dev.csv"))
    kwargs = dict(data_folder=data_folder, snrs=[0], seed=5)
    test = prepare_test_conditions(
        folder, noise_csv=paths["noise_test"], **kwargs
    )
    dev = prepare_test_conditions(
        folder, noise_csv=paths["noise_adapt"], split="dev", **kwargs
    )
    assert os.path.basename(dev["clean"]) == "dev.csv"
    assert os.path.basename(dev["0dB"]) == "dev_0dB.csv"
    assert os.path.basename(test["0dB"]) == "test_0dB.csv"
    dev_rows, clean_rows = _rows(dev["0dB"]), _rows(dev["clean"])
    assert [r["ID"] for r in dev_rows] == [r["ID"] for r in clean_rows]
    assert all(abs(float(r["snr"])) < 0.5 for r in dev_rows)
    assert all(os.path.dirname(r["wav"]).endswith("dev_0dB") for r in dev_rows)
    # The test conditions are untouched by the dev ones.
    assert _rows(test["0dB"]) == _rows(os.path.join(folder, "test_0dB.csv"))
