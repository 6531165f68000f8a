"""The study runner as users run it: a miniature study (tiny encoder, a few utterances, one
epoch) writes every output, and a second run skips the finished stages."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from ctsl_brain.analysis import SYSTEMS, embedding_analysis
from ctsl_brain.losses import info_nce, transfer_loss
from recipe_run import run_checked

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUTS = [
    "table1.md",
    "table1.csv",
    "table1.json",
    "table2.md",
    "table2.csv",
    "table2.json",
    "ccc_vs_snr.png",
    "predictions.csv",
    "group_ccc.csv",
    "study_log.txt",
]


def _study_command(results, data_folder):
    return [
        sys.executable,
        "study.py",
        "--data_folder",
        data_folder,
        "--results_folder",
        results,
        "--teacher_epochs",
        "3",
        "--student_epochs",
        "1",
        "--n_groups",
        "4",
        "--batch_size",
        "4",
        "--test_batch_size",
        "8",
        "--head_hidden_size",
        "16",
        "--test_snrs",
        "[5, 0]",
        "--noprogressbar",
        "--prepare_options",
        "{n_train: 12, n_dev: 8, n_test: 8, adapt_noise_minutes: 0.2, test_noise_minutes: 0.2}",
    ]


def _study(results, data_folder):
    return run_checked(_study_command(results, data_folder)).stdout


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("study")
    results, data_folder = str(base / "results"), str(base / "demo")
    first = _study(results, data_folder)
    return results, first, _study(results, data_folder)


@pytest.mark.slow
def test_miniature_study_writes_every_output(study):
    results, first, _ = study
    folder = os.path.join(results, "demo", "study", "1986")
    for name in OUTPUTS:
        assert os.path.getsize(os.path.join(folder, name)) > 0, name
    for number in range(1, 9):
        assert f"stage {number}/8" in first

    table1 = pd.read_csv(os.path.join(folder, "table1.csv"))
    assert list(dict.fromkeys(table1["system"])) == list(SYSTEMS)
    assert set(table1["condition"]) == {"clean", "5dB", "0dB"}
    # Original: the best non-consecutive of 3 epochs (1 or 2 checkpoints); the others trained
    # one epoch (1 checkpoint); x 4 groups.
    with open(
        os.path.join(results, "demo", "teacher", "1986", "evaluation.json")
    ) as fin:
        epochs = [c["epoch"] for c in json.load(fin)["checkpoints"]]
    assert epochs in ([2], [1, 3], [3, 1])
    assert set(table1.loc[table1["system"] == "Original", "n"]) == {
        4 * len(epochs)
    }
    assert set(table1.loc[table1["system"] != "Original", "n"]) == {4}
    assert (
        table1.loc[table1["system"] == "Original", "p_vs_Original"].isna().all()
    )
    assert (
        table1.loc[table1["system"] != "Original", "p_vs_Original"]
        .between(0, 1)
        .all()
    )
    markdown = open(os.path.join(folder, "table1.md")).read()
    for system in SYSTEMS:
        assert f"| {system} |" in markdown

    predictions = pd.read_csv(os.path.join(folder, "predictions.csv"))
    assert list(predictions.columns[:4]) == [
        "ID",
        "system",
        "condition",
        "checkpoint",
    ]
    # systems x conditions x test utterances (x checkpoints for Original)
    assert len(predictions) == (6 + len(epochs)) * 3 * 8
    assert set(
        predictions.loc[predictions["system"] == "Original", "checkpoint"]
    ) == set(epochs)
    values = pd.read_csv(os.path.join(folder, "group_ccc.csv"))
    assert len(values) == (6 + len(epochs)) * 3 * 4

    table2 = pd.read_csv(os.path.join(folder, "table2.csv"))
    assert len(table2) == 7 * 3  # systems x dev conditions (clean, 5 and 0 dB)
    original_clean = table2[
        (table2["system"] == "Original") & (table2["condition"] == "clean")
    ]
    assert original_clean["rmse"].iloc[0] == pytest.approx(0, abs=1e-6)
    assert original_clean["cosine"].iloc[0] == pytest.approx(1, abs=1e-6)
    noisy = table2[table2["condition"] != "clean"]
    assert (noisy["rmse"] > 0).all() and (noisy["cosine"] < 1).all()


@pytest.mark.slow
def test_second_run_skips_finished_stages(study):
    _, _, second = study
    for system in SYSTEMS:
        assert f"{system}: finished earlier" in second
    assert "Going into epoch" not in second


def _student_checkpoints(results):
    """The adapted systems' save folders that hold a checkpoint."""
    found = set()
    for path in glob.glob(
        os.path.join(results, "demo", "*", "1986", "save", "CKPT+*")
    ):
        system = path.split(os.sep)[-4]
        if system != "teacher":
            found.add(system)
    return found


def _kill_study_when(process, condition, timeout=600):
    """Kills the study and its stages (its process group) once ``condition()`` holds;
    returns whether it was killed before it finished."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if condition():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.02)
    process.wait()
    return False


@pytest.mark.slow
def test_a_study_killed_during_its_parallel_stages_ends_as_if_uninterrupted(
    study, tmp_path
):
    """Killed twice while its adapted systems train at once (with a checkpoint every step),
    then run again: the study's tables, predictions and figure are byte-identical to those of
    the same study left uninterrupted."""
    results, _, _ = study
    data_folder = os.path.join(os.path.dirname(results), "demo")
    killed = str(tmp_path / "results")
    command = _study_command(killed, data_folder) + [
        "--ckpt_interval_steps",
        "1",
    ]
    log = tmp_path / "study.out"
    seen, kills = set(), 0
    for _ in range(2):
        with open(log, "a") as out:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Killed once a stage that had no checkpoint at the last kill has one.
        kills += _kill_study_when(
            process, lambda: _student_checkpoints(killed) - seen
        )
        seen = _student_checkpoints(killed)
    assert kills == 2, log.read_text()[-3000:]
    run_checked(command)
    reference = os.path.join(results, "demo", "study", "1986")
    resumed = os.path.join(killed, "demo", "study", "1986")
    for name in OUTPUTS:
        if name == "study_log.txt":
            continue  # commands and times
        with open(os.path.join(reference, name), "rb") as fin:
            expected = fin.read()
        with open(os.path.join(resumed, name), "rb") as fin:
            assert fin.read() == expected, name


@pytest.mark.slow
def test_rm_tl_cl_run_records_its_infonce_settings(study):
    results, _, _ = study
    with open(
        os.path.join(results, "demo", "rm_tl_cl", "1986", "evaluation.json")
    ) as fin:
        evaluation = json.load(fin)
    assert evaluation["infonce"] == {
        "margin": 0.5,
        "rule": "all",
        "boundary": "more_than",
        "tolerance": 1e-4,
        "temperature": 0.1,
        "denominator": "with_positive",
    }
    assert [c["epoch"] for c in evaluation["checkpoints"]] == [1]


def test_embedding_analysis_matches_the_training_losses():
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(64, 8, generator=generator)
    noisy = clean + 0.3 * torch.randn(64, 8, generator=generator)
    labels = 1 + 6 * torch.rand(64, 3, generator=generator)
    measures = embedding_analysis(clean, noisy, labels, group_size=64, seed=0)
    order = torch.as_tensor(
        __import__("numpy").random.default_rng(0).permutation(64)
    )
    expected_nce = info_nce(
        noisy[order], clean[order], labels[order], margin=0.5
    )
    assert measures["infonce"] == pytest.approx(float(expected_nce), rel=1e-6)
    # The run's InfoNCE settings, as recorded in its evaluation.json, are the analysis' too.
    settings = {
        "margin": 1.0,
        "rule": "any",
        "boundary": "at_least",
        "tolerance": 1e-3,
    }
    settings.update(temperature=0.3, denominator="negatives")
    other = embedding_analysis(
        clean, noisy, labels, group_size=64, seed=0, infonce=settings
    )
    expected_other = info_nce(
        noisy[order], clean[order], labels[order], **settings
    )
    assert other["infonce"] == pytest.approx(float(expected_other), rel=1e-6)
    assert abs(other["infonce"] - measures["infonce"]) > 0.01
    assert measures["rmse"] == pytest.approx(
        float(transfer_loss(clean, noisy)), rel=1e-6
    )
    expected_cos = torch.nn.functional.cosine_similarity(clean, noisy).mean()
    assert measures["cosine"] == pytest.approx(float(expected_cos), rel=1e-6)


@pytest.mark.slow
def test_the_field_system_adapts_from_the_field_recordings_noise(study):
    """RM+TL+CL (field) trains with the bank of the demo's field recordings' stretches without
    speech, every other student with the clean adaptation bank."""
    results, first, _ = study
    manifests = os.path.join(results, "demo", "manifests")
    field_bank = os.path.join(manifests, "field", "noise_adapt.csv")
    stretches = pd.read_csv(
        os.path.join(manifests, "field", "field_stretches.csv")
    )
    assert len(stretches) > 0 and os.path.isfile(field_bank)
    for name, expected in (
        ("rm_tl_cl_field", field_bank),
        ("rm_tl_cl", os.path.join(manifests, "noise_adapt.csv")),
    ):
        with open(
            os.path.join(results, "demo", name, "1986", "log.txt")
        ) as fin:
            assert f"adaptation noise bank: {expected}" in fin.read(), name
    assert "RM+TL+CL (field):" in first


def test_the_field_system_needs_field_recordings(tmp_path):
    """Outside the demo, the field system runs only with --field_folder."""
    from study import parse_arguments

    args, _ = parse_arguments(
        ["--corpus", "manifests", "--data_folder", str(tmp_path)]
    )
    assert "RM+TL+CL (field)" not in args.systems and len(args.systems) == 6
    args, _ = parse_arguments(
        [
            "--corpus",
            "manifests",
            "--data_folder",
            str(tmp_path),
            "--field_folder",
            str(tmp_path / "room"),
        ]
    )
    assert args.systems[-1] == "RM+TL+CL (field)"
    with pytest.raises(SystemExit):
        parse_arguments(
            [
                "--corpus",
                "manifests",
                "--data_folder",
                str(tmp_path),
                "--systems",
                "RM+TL+CL (field)",
            ]
        )


def test_unknown_system_is_a_clear_error(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "study.py",
            "--systems",
            "RM,RM+XL",
            "--results_folder",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown RM+XL" in done.stderr and "RM+TL+CL" in done.stderr
    assert not os.listdir(tmp_path)


def _study_of_a_missing_corpus(tmp_path, *options):
    """A study whose first stage fails: its corpus and manifests do not exist."""
    return subprocess.run(
        [
            sys.executable,
            "study.py",
            *options,
            "--corpus",
            "manifests",
            "--data_folder",
            str(tmp_path / "nothing"),
            "--results_folder",
            str(tmp_path / "results"),
            "--manifest_folder",
            str(tmp_path / "no_manifests"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.slow
def test_a_failed_stage_stops_the_study_with_its_status(tmp_path):
    """A train.py failure (here: a corpus that does not exist) ends the study at that stage."""
    done = _study_of_a_missing_corpus(tmp_path)
    assert done.returncode != 0
    assert "stage 1/7 Original failed" in done.stdout
    assert "stage 2/7" not in done.stdout


def _stand_in_stages(monkeypatch, tmp_path, scripts):
    """The study with each system's train.py replaced by a Python one-liner."""
    import study

    def command(system, args, overrides):
        return [sys.executable, "-c", scripts[system]]

    monkeypatch.setattr(study, "stage_command", command)
    args, overrides = study.parse_arguments(
        ["--results_folder", str(tmp_path / "results"), "--jobs", "2"]
    )
    folder = tmp_path / "study"
    folder.mkdir()
    return study, args, overrides, str(folder), study.Progress(str(folder))


def test_stages_at_once_share_the_cores_and_keep_their_output(
    monkeypatch, tmp_path
):
    report = "import os; print('threads', os.environ.get('OMP_NUM_THREADS'))"
    systems = ["RM", "RM+TL", "RM+CL"]
    study, args, overrides, folder, log = _stand_in_stages(
        monkeypatch, tmp_path, dict.fromkeys(systems, report)
    )
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(study, "_cores", lambda: 4)
    numbered = list(enumerate(systems, start=2))
    study.run_stages_at_once(numbered, 5, args, overrides, folder, log)
    for system in systems:
        output = os.path.join(folder, "stages", f"{system}.out")
        assert open(output).read() == "threads 2\n"  # 4 cores, 2 jobs
        with open(os.path.join(folder, "stages", f"{system}.json")) as fin:
            assert json.load(fin)["command"][-1] == report
    lines = open(os.path.join(folder, "study_log.txt")).read().splitlines()
    started = [
        line.split("stage ")[1][:3] for line in lines if "(on 2 threads" in line
    ]
    assert started == ["4/5", "3/5", "2/5"]  # the last of the table first
    assert sum("done in" in line for line in lines) == 3


def test_a_failed_stage_among_several_lets_the_running_finish_and_starts_no_other(
    monkeypatch, tmp_path
):
    slow = "import time; time.sleep(2); print('slow one done')"
    fail = "import sys; print('the error of this stage'); sys.exit(3)"
    study, args, overrides, folder, log = _stand_in_stages(
        monkeypatch,
        tmp_path,
        {"RM": "print('never')", "RM+TL": slow, "RM+CL": fail},
    )
    numbered = [(2, "RM"), (3, "RM+TL"), (4, "RM+CL")]
    with pytest.raises(SystemExit) as ended:
        study.run_stages_at_once(numbered, 5, args, overrides, folder, log)
    assert ended.value.code == 3
    stages = os.path.join(folder, "stages")
    assert open(os.path.join(stages, "RM+TL.out")).read() == "slow one done\n"
    assert os.path.isfile(os.path.join(stages, "RM+TL.json"))
    assert not os.path.exists(os.path.join(stages, "RM+CL.json"))
    assert not os.path.exists(os.path.join(stages, "RM.out"))  # never started
    text = open(os.path.join(folder, "study_log.txt")).read()
    assert "stage 4/5 RM+CL failed (exit status 3); its output is" in text
    assert "RM+CL.out" in text and "Run the study again to resume." in text


def test_an_interrupted_study_stops_its_running_stages(monkeypatch, tmp_path):
    forever = "import time; print('started', flush=True); time.sleep(60)"
    study, args, overrides, folder, log = _stand_in_stages(
        monkeypatch, tmp_path, {"RM": forever, "RM+TL": forever}
    )
    started = []
    real_popen = subprocess.Popen

    def popen(*popen_args, **kwargs):
        process = real_popen(*popen_args, **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(study.subprocess, "Popen", popen)
    ticks = iter(range(6))

    def sleep(_seconds):
        if next(ticks) == 5:  # the user presses Ctrl-C
            raise KeyboardInterrupt

    monkeypatch.setattr(study.time, "sleep", sleep)
    with pytest.raises(KeyboardInterrupt):
        study.run_stages_at_once(
            [(2, "RM"), (3, "RM+TL")], 4, args, overrides, folder, log
        )
    assert len(started) == 2
    assert [process.returncode for process in started] == [-signal.SIGTERM] * 2


def test_seeds_are_parsed_and_checked():
    from study import parse_arguments

    args, _ = parse_arguments(["--seeds", "1986, 2,3"])
    assert args.seeds == [1986, 2, 3] and args.seed == 1986
    assert parse_arguments(["--seed", "7"])[0].seeds == [7]
    for bad in (
        ["--seeds", "1,x"],
        ["--seeds", "1,1"],
        ["--seeds", ","],
        ["--seed", "1", "--seeds", "2,3"],
    ):
        with pytest.raises(SystemExit):
            parse_arguments(bad)


def test_seeds_analysis_writes_table_figure_and_field_share(tmp_path):
    from ctsl_brain.analysis import analyse_seeds

    folders = {}
    field_means = {1: 0.60, 2: 0.66}
    for seed, field in field_means.items():
        rows = []
        for system, noisy in (
            ("Original", 0.40),
            ("RM+TL+CL", 0.70 + 0.01 * seed),
            ("RM+TL+CL (field)", field),
        ):
            for condition, value in (("clean", 0.8), ("0dB", noisy)):
                for attribute in ("arousal", "dominance", "valence"):
                    rows.append(
                        {
                            "system": system,
                            "condition": condition,
                            "attribute": attribute,
                            "mean": value,
                            "std": 0.05,
                            "n": 90,
                        }
                    )
        folders[seed] = tmp_path / str(seed)
        folders[seed].mkdir()
        pd.DataFrame(rows).to_csv(folders[seed] / "table1.csv", index=False)
    out = tmp_path / "seeds_1_2"
    outputs = analyse_seeds({s: str(f) for s, f in folders.items()}, str(out))
    for name in (
        "table1.md",
        "table1.csv",
        "table1.json",
        "ccc_vs_snr.png",
        "field_gain.md",
        "field_gain.csv",
        "field_gain.json",
    ):
        assert (out / name).is_file(), name
    markdown = (out / "table1.md").read_text()
    assert "**0.715** ± 0.007\\*" in markdown and "seeds 1, 2" in markdown
    kept = outputs["field_gain"].set_index(["seed", "attribute"])["kept"]
    assert kept[(1, "arousal")] == pytest.approx((0.60 - 0.40) / (0.71 - 0.40))
    assert kept[(2, "valence")] == pytest.approx((0.66 - 0.40) / (0.72 - 0.40))
    assert "| 73% ± 12% |" in (out / "field_gain.md").read_text()
    table = json.loads((out / "table1.json").read_text())
    assert table[0]["n"] == 2 and len(json.loads(table[0]["seed_means"])) == 2

    (folders[2] / "table1.csv").unlink()
    with pytest.raises(Exception, match="seed 2"):
        analyse_seeds({s: str(f) for s, f in folders.items()}, str(out))


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    base = tmp_path_factory.mktemp("seeds")
    results, data_folder = str(base / "results"), str(base / "demo")
    command = _study_command(results, data_folder) + [
        "--seeds",
        "1,2",
        "--systems",
        "RM+TL+CL",
    ]
    return results, data_folder, command, run_checked(command).stdout


@pytest.mark.slow
def test_a_study_over_two_seeds_trains_each_seed_and_tables_them(two_seeds):
    results, _, command, first = two_seeds
    study = os.path.join(results, "demo", "study")
    for seed in ("1", "2"):
        # Each seed its own teacher, students and tables.
        for run in ("teacher", "rm_tl_cl"):
            assert os.path.isfile(
                os.path.join(results, "demo", run, seed, "evaluation.json")
            )
        assert os.path.isfile(os.path.join(study, seed, "table1.md"))
    seeds = os.path.join(study, "seeds_1_2")
    for name in ("table1.md", "table1.csv", "table1.json", "ccc_vs_snr.png"):
        assert os.path.isfile(os.path.join(seeds, name))
    table = pd.read_csv(os.path.join(seeds, "table1.csv"))
    assert set(table["n"]) == {2} and set(table["system"]) == {
        "Original",
        "RM+TL+CL",
    }
    for _, row in table.iterrows():
        per_seed = [
            pd.read_csv(os.path.join(study, seed, "table1.csv"))
            .set_index(["system", "condition", "attribute"])
            .loc[(row["system"], row["condition"], row["attribute"]), "mean"]
            for seed in ("1", "2")
        ]
        assert row["mean"] == pytest.approx(sum(per_seed) / 2)
    assert "± standard deviation over seeds" in first
    again = run_checked(command).stdout
    assert "Going into epoch" not in again
    assert again.count("finished earlier") == 4


FAKE_SBATCH = """#!{python}
import json, os, sys
log = os.environ["FAKE_SLURM_LOG"]
calls = json.load(open(log)) if os.path.exists(log) else []
script = open(sys.argv[-1]).read()
calls.append({{"args": sys.argv[1:], "script": script}})
json.dump(calls, open(log, "w"))
print(f"Submitted batch job {{100 + len(calls)}}")
"""
FAKE_SACCT = """#!{python}
import json, os, sys
states = json.load(open(os.environ["FAKE_SLURM_STATES"]))
ids = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "-j"]
print("JobID|State|NodeList")
for job_id in ids:
    print(f"{{job_id}}|{{states.get(job_id, states.get('default', 'PENDING'))}}|node1")
"""
FAKE_SCANCEL = """#!{python}
import os, sys
with open(os.environ["FAKE_SLURM_CANCELLED"], "a") as fout:
    fout.write(" ".join(sys.argv[1:]) + "\\n")
"""


def _fake_slurm(tmp_path):
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    fakes = (
        ("sbatch", FAKE_SBATCH),
        ("sacct", FAKE_SACCT),
        ("scancel", FAKE_SCANCEL),
        ("srun", "#!/bin/sh\n"),
    )
    for name, text in fakes:
        path = bin_folder / name
        path.write_text(text.format(python=sys.executable))
        path.chmod(0o755)
    states = tmp_path / "states.json"
    states.write_text("{}")
    env = dict(os.environ)
    env["PATH"] = f"{bin_folder}{os.pathsep}{env['PATH']}"
    env["FAKE_SLURM_LOG"] = str(tmp_path / "sbatch.json")
    env["FAKE_SLURM_STATES"] = str(states)
    env["FAKE_SLURM_CANCELLED"] = str(tmp_path / "cancelled.txt")
    return env, tmp_path / "sbatch.json", states


def test_slurm_jobs_get_their_resources_and_dependencies_and_are_submitted_once(
    tmp_path,
):
    env, calls_file, states = _fake_slurm(tmp_path)
    results = tmp_path / "results"
    command = [
        sys.executable,
        "study.py",
        "--cluster",
        "slurm",
        "--submit_only",
        "--seeds",
        "1,2",
        "--systems",
        "RM+TL+CL",
        "--results_folder",
        str(results),
        "--slurm_partition",
        "gpu",
        "--slurm_gpus",
        "2",
        "--slurm_cpus",
        "4",
        "--slurm_time",
        "90",
        "--slurm_mem",
        "32",
        "--slurm_extra",
        "account=lab,qos=high",
    ]

    def study():
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout, json.loads(calls_file.read_text())

    out, calls = study()
    assert len(calls) == 4  # two teachers, two students
    jobs = {}  # (seed, system) -> job id, from the stage records
    for seed in ("1", "2"):
        for system in ("Original", "RM+TL+CL"):
            record = results / "demo" / "study" / seed / "stages"
            record = json.loads((record / f"{system}.job.json").read_text())
            assert (
                record["cluster"] == "slurm" and "--seed" in record["command"]
            )
            jobs[(seed, system)] = record["job_id"]
    for call in calls:
        script = call["script"]
        for option in (
            "--partition=gpu",
            "--gpus-per-node=2",
            "--cpus-per-task=4",
            "--time=90",
            "--mem=32GB",
            "--account=lab",
            "--qos=high",
            "--requeue",
        ):
            assert f"#SBATCH {option}" in script, (option, script)

    def script_of(job_id):
        return calls[int(job_id) - 101][
            "script"
        ]  # the fake's ids count from 101

    for seed in ("1", "2"):
        teacher = jobs[(seed, "Original")]
        assert "--dependency" not in script_of(teacher)
        student = script_of(jobs[(seed, "RM+TL+CL")])
        assert f"#SBATCH --dependency=afterok:{teacher}" in student
    assert "run the same command again" in out

    # Queued or running: nothing is submitted again.
    states.write_text(json.dumps({jobs[("1", "Original")]: "RUNNING"}))
    out, calls = study()
    assert len(calls) == 4 and out.count("submitted earlier") == 4

    # A failed student is submitted again, after its teacher's job.
    states.write_text(json.dumps({jobs[("2", "RM+TL+CL")]: "FAILED"}))
    out, calls = study()
    assert len(calls) == 5 and out.count("submitted earlier") == 3
    record = results / "demo" / "study" / "2" / "stages" / "RM+TL+CL.job.json"
    assert json.loads(record.read_text())["job_id"] == "105"
    assert f"afterok:{jobs[('2', 'Original')]}" in calls[-1]["script"]


FAKE_STAGE = """
import json, os, sys, time
start = time.time()
time.sleep(1.0)
record = {"system": sys.argv[2], "seed": sys.argv[3], "start": start,
          "end": time.time(), "threads": os.environ.get("OMP_NUM_THREADS")}
with open(os.path.join(sys.argv[1], f"{sys.argv[3]}_{sys.argv[2]}.json"), "w") as fout:
    json.dump(record, fout)
"""


def test_the_local_cluster_runs_jobs_at_a_time_teachers_first(
    tmp_path, monkeypatch
):
    submitit = pytest.importorskip("submitit")
    assert submitit
    import study

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(study, "_cores", lambda: 4)
    monkeypatch.setattr(
        study,
        "stage_command",
        lambda system, args, overrides: [
            sys.executable,
            "-c",
            FAKE_STAGE,
            str(tmp_path),
            system,
            str(args.seed),
        ],
    )
    monkeypatch.setattr(study, "analyse_seed", lambda *args: None)
    args, overrides = study.parse_arguments(
        [
            "--cluster",
            "local",
            "--seeds",
            "1,2",
            "--systems",
            "RH,RM,RM+TL",
            "--jobs",
            "2",
            "--results_folder",
            str(tmp_path / "results"),
        ]
    )
    study.run_on_cluster(args, overrides)
    runs = [json.loads(p.read_text()) for p in tmp_path.glob("*_*.json")]
    assert len(runs) == 8  # 2 seeds x (teacher + 3 students)
    teachers = [r for r in runs if r["system"] == "Original"]
    students = [r for r in runs if r["system"] != "Original"]
    assert max(r["end"] for r in teachers) <= min(r["start"] for r in students)
    for run in runs:  # never more than --jobs at once
        at_once = [
            r
            for r in runs
            if r["start"] < run["end"] and run["start"] < r["end"]
        ]
        assert len(at_once) <= 2, at_once
    # Each wave shares the (here 4) cores.
    assert {r["threads"] for r in runs} == {"2"}


def test_submit_only_needs_slurm():
    from study import parse_arguments

    with pytest.raises(SystemExit):
        parse_arguments(["--cluster", "local", "--submit_only"])
    with pytest.raises(SystemExit):
        parse_arguments(["--slurm_extra", "=x"])


@pytest.mark.slow
def test_the_local_cluster_gives_the_plain_runners_tables(two_seeds, tmp_path):
    plain_results, data_folder, _, _ = two_seeds
    results = str(tmp_path / "results")
    command = _study_command(results, data_folder) + [
        "--seed",
        "2",
        "--systems",
        "RM+TL+CL",
        "--cluster",
        "local",
    ]
    out = run_checked(command).stdout
    assert out.count(" job ") >= 2  # each stage a job
    study = os.path.join(results, "demo", "study")
    for system in ("Original", "RM+TL+CL"):
        with open(
            os.path.join(study, "2", "stages", f"{system}.job.json")
        ) as fin:
            job_id = json.load(fin)["job_id"]
        # Each job keeps its output.
        assert os.path.getsize(
            os.path.join(study, "jobs", f"{job_id}_0_log.out")
        )
    for name in OUTPUTS[:-1]:
        with open(os.path.join(study, "2", name), "rb") as fin:
            ours = fin.read()
        with open(
            os.path.join(plain_results, "demo", "study", "2", name), "rb"
        ) as fin:
            assert ours == fin.read(), name


@pytest.mark.slow
def test_a_failed_job_stops_the_study_with_the_tail_of_its_output(tmp_path):
    done = _study_of_a_missing_corpus(tmp_path, "--cluster", "local")
    assert done.returncode == 1
    assert "stage 1/7 Original failed (job" in done.stdout
    assert (
        "no_manifests" in done.stdout
    )  # train.py's one-line error, from the job's output
    assert "stage 2/7" not in done.stdout
    assert "Run the study again to resume." in done.stdout


def test_a_failed_teacher_job_cancels_its_students_and_stops_the_study(
    tmp_path,
):
    env, calls_file, states = _fake_slurm(tmp_path)
    command = [
        sys.executable,
        "study.py",
        "--cluster",
        "slurm",
        "--systems",
        "RM+TL+CL",
        "--results_folder",
        str(tmp_path / "results"),
    ]
    run = dict(cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    done = subprocess.run([*command, "--submit_only"], **run)
    assert done.returncode == 0, done.stderr
    # The teacher (101) failed; its student (102) waits for it.
    states.write_text(json.dumps({"default": "FAILED", "102": "PENDING"}))
    done = subprocess.run(command, **run)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "stage 1/3 Original failed (job 103" in done.stdout
    )  # submitted again
    assert "job 102 cancelled, its teacher failed" in done.stdout
    assert "102" in (tmp_path / "cancelled.txt").read_text()
    assert len(json.loads(calls_file.read_text())) == 3
