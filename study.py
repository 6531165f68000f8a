#!/usr/bin/env python3
"""The paper's experiment in one command: all its systems, tables, plots.

On the embedded demo corpus (the default; a tiny encoder on CPU, about 11
minutes on 2 cores), and on MSP-Podcast with the paper's settings (any other
train.py override goes to every stage):

    python study.py
    python study.py --corpus msp_podcast --data_folder /data/MSP-Podcast \\
        --noise_folder /data/radio_noise \\
        [--encoder_hparams hparams/encoders/wavlm_large.yaml]

Trains the teacher (Original) and the adapted systems, evaluates them on the
clean and noisy test sets, and writes Tables 1 and 2, the CCC-vs-SNR figure and
every prediction under ``<results_folder>/<corpus>/study/<seed>``. An
interrupted study resumes where it stopped. Details: docs/study.md.
"""

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time

from ctsl_brain.analysis import (
    FIELD_FOLDER_MARKER,
    FIELD_SYSTEM,
    SYSTEMS,
    analyse_seeds,
    analyse_study,
)
from ctsl_brain.dataio import MissingInputError, run_command, write_text_atomic
from ctsl_brain.locks import FolderLock

ROOT = os.path.dirname(os.path.abspath(__file__))

# The paper's settings suit a pretrained wav2vec2-large; a tiny randomly initialised encoder
# learning from scratch in minutes needs a higher learning rate and a lighter head.
DEMO_OVERRIDES = [
    "--encoder_hparams", "hparams/encoders/tiny_wav2vec2.yaml",
    "--lr", "0.0003", "--num_workers", "0",
    "--head_hidden_size", "256", "--head_hidden_layers", "1", "--head_dropout", "0.1",
]  # fmt: skip
# The demo's teacher learns from a random initialisation: smaller batches give it twice the
# updates for the same compute, which valence, its slowest attribute, needs. The students start
# from it and keep batches of 16 for their in-batch InfoNCE negatives.
DEMO_STAGE_OVERRIDES = {
    "teacher": ["--batch_size", "8"],
    "student": ["--batch_size", "16"],
}
DEMO_EPOCHS = {"teacher": 10, "student": 6}
CLUSTERS = ("none", "local", "slurm")
# Slurm states of a job that may still run: such a job is not submitted again.
QUEUED_OR_RUNNING = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "CONFIGURING",
    "COMPLETING",
    "RESIZING",
    "SUSPENDED",
    "SIGNALING",
    "STAGE_OUT",
    "UNKNOWN",  # not in sacct yet
}


def _duration(seconds):
    """``seconds`` as text, in minutes and seconds."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class Progress:
    """Prints the study's progress and keeps it in ``study_log.txt``.

    Arguments
    ---------
    folder : str
        The study's folder, where ``study_log.txt`` is appended to.

    Example
    -------
    >>> log = Progress(str(getfixture("tmp_path")))
    >>> log("stage 1/2 Original: done")  # doctest: +ELLIPSIS
    [study ..., 0 s] stage 1/2 Original: done
    """

    def __init__(self, folder):
        self.path = os.path.join(folder, "study_log.txt")
        self.start = time.monotonic()

    def __call__(self, message):
        """Prints ``message`` with the time and appends it to the log.

        Arguments
        ---------
        message : str
            One line of progress.
        """
        line = f"[study {time.strftime('%H:%M:%S')}, {_duration(time.monotonic() - self.start)}] "
        line += message
        print(line, flush=True)
        with open(self.path, "a") as fout:
            fout.write(line + "\n")


def _cores():
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def parse_arguments(argv):
    """Parses the study's command line.

    Arguments
    ---------
    argv : list of str
        The command line's arguments.

    Returns
    -------
    args : argparse.Namespace
        The study's options, with ``systems`` a list that starts with Original
        and ``data_folder`` and ``results_folder`` absolute.
    overrides : list of str
        The remaining ``--key value`` pairs, train.py overrides for every stage.

    Example
    -------
    >>> args, overrides = parse_arguments(["--systems", "RM", "--lr", "0.1"])
    >>> args.systems, overrides
    (['Original', 'RM'], ['--lr', '0.1'])
    """
    parser = argparse.ArgumentParser(
        description="The paper's experiment in one command: its six systems (and the "
        "method adapted from field recordings), "
        "significance-tested tables, plots.",
        epilog="Unrecognised --key value pairs are train.py overrides for every stage.",
    )
    parser.add_argument(
        "--corpus", default="demo", help="demo, msp_podcast or manifests"
    )
    parser.add_argument(
        "--data_folder", help="the corpus (default for demo: data/demo)"
    )
    parser.add_argument(
        "--results_folder", default=os.path.join(ROOT, "results")
    )
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument(
        "--seeds",
        help="comma-separated seeds, e.g. 1986,2,3: the whole study under each seed (its own "
        "teacher included), then Table 1 over seeds and its figure in "
        "<results_folder>/<corpus>/study/seeds_<seed>_<seed>... (instead of --seed)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of "
        + ", ".join(SYSTEMS)
        + " (Original is always run)",
    )
    parser.add_argument(
        "--field_folder",
        help="recordings of the target place with people talking in them, for the system "
        "RM+TL+CL (field) (default for demo: <data_folder>/field; without one, that system "
        "is left out)",
    )
    parser.add_argument(
        "--teacher_epochs",
        type=int,
        help=f"default: demo {DEMO_EPOCHS['teacher']}, else the YAML's",
    )
    parser.add_argument(
        "--student_epochs",
        type=int,
        help=f"default: demo {DEMO_EPOCHS['student']}, else the YAML's",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        help="adapted systems trained at once once Original is done, each on its share of "
        "the CPU cores (they share the GPUs there are); their output goes to "
        "<study folder>/stages/<system>.out; with --cluster local, the teachers too "
        "(default: demo 2 where there are 2 cores or more, else 1)",
    )
    parser.add_argument(
        "--n_groups", type=int, default=30, help="test groups (paper: 30)"
    )
    parser.add_argument(
        "--group_seed", type=int, default=0, help="seed of the test groups"
    )
    parser.add_argument(
        "--cluster",
        choices=CLUSTERS,
        default="none",
        help="none: the stages run here (--jobs); slurm: each stage is a Slurm job, through "
        "submitit (the students wait for their teacher's job); local: the same path through "
        "submitit's local executor, on this machine",
    )
    parser.add_argument(
        "--submit_only",
        action="store_true",
        help="with --cluster slurm: submit the stages that are neither finished nor queued, "
        "print their job ids and end; the same command again waits for them and writes the "
        "tables",
    )
    slurm = parser.add_argument_group("Slurm jobs (with --cluster slurm)")
    slurm.add_argument("--slurm_partition")
    slurm.add_argument("--slurm_gpus", type=int, default=1, help="GPUs per job")
    slurm.add_argument(
        "--slurm_cpus", type=int, default=8, help="CPU cores per job"
    )
    slurm.add_argument(
        "--slurm_time", type=int, default=1440, help="minutes per job"
    )
    slurm.add_argument("--slurm_mem", type=float, help="GB of memory per job")
    slurm.add_argument(
        "--slurm_extra",
        default="",
        help='more sbatch options as key=value, comma-separated, e.g. "account=lab,qos=high"',
    )
    parser.add_argument(
        "--launcher",
        default=f"{shlex.quote(sys.executable)}",
        help='what runs train.py, e.g. "torchrun --nproc_per_node=4" (default: this Python)',
    )
    args, overrides = parser.parse_known_args(argv)
    if args.seeds is None:
        args.seeds = [args.seed]
    else:
        if any(a == "--seed" or a.startswith("--seed=") for a in argv or []):
            parser.error("give --seed or --seeds, not both")
        try:
            args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            parser.error(
                f"--seeds: comma-separated integers, got {args.seeds!r}"
            )
        if not args.seeds or len(set(args.seeds)) != len(args.seeds):
            parser.error(f"--seeds: distinct seeds, got {args.seeds}")
        args.seed = args.seeds[0]
    systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = [name for name in systems if name not in SYSTEMS]
    if unknown:
        parser.error(
            f"--systems: unknown {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}"
        )
    if args.data_folder is None:
        if args.corpus != "demo":
            parser.error(f"--data_folder is required for corpus {args.corpus}")
        args.data_folder = os.path.join(ROOT, "data", "demo")
    # train.py runs in the repository; paths given here are relative to where the user is.
    args.data_folder = os.path.abspath(args.data_folder)
    if args.field_folder is None and args.corpus == "demo":
        args.field_folder = os.path.join(args.data_folder, "field")
    if args.field_folder is None:
        if FIELD_SYSTEM in systems and args.systems != parser.get_default(
            "systems"
        ):
            parser.error(f"--systems {FIELD_SYSTEM} needs --field_folder")
        systems = [name for name in systems if name != FIELD_SYSTEM]
    else:
        args.field_folder = os.path.abspath(args.field_folder)
    args.systems = ["Original"] + [
        name for name in systems if name != "Original"
    ]
    args.results_folder = os.path.abspath(args.results_folder)
    if args.submit_only and args.cluster != "slurm":
        parser.error("--submit_only needs --cluster slurm")
    try:
        args.slurm_extra = sbatch_options(args.slurm_extra)
    except ValueError as error:
        parser.error(f"--slurm_extra: {error}")
    if args.jobs is None:
        args.jobs = min(2, _cores()) if args.corpus == "demo" else 1
    elif args.jobs < 1:
        parser.error(f"--jobs must be 1 or more; got {args.jobs}")
    return args, overrides


def sbatch_options(text):
    """``key=value`` pairs, comma-separated, as a dict of sbatch options.

    Arguments
    ---------
    text : str
        E.g. ``"account=lab,qos=high"``; a key alone is a flag.

    Returns
    -------
    options : dict
        Option name (without ``--``) -> value (True for a flag).

    Raises
    ------
    ValueError
        When a key is empty.

    Example
    -------
    >>> sbatch_options("account=lab, qos=high,exclusive")
    {'account': 'lab', 'qos': 'high', 'exclusive': True}
    """
    options = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, has_value, value = item.partition("=")
        key = key.strip().removeprefix("--")
        if not key:
            raise ValueError(f"no option name in {item.strip()!r}")
        options[key] = value.strip() if has_value else True
    return options


def merge_overrides(*groups):
    """Merges ``--key value`` lists (and value-less ``--flag``).

    Later groups win: a key given twice would be a duplicate key in
    HyperPyYAML's overrides.

    Arguments
    ---------
    *groups : list of str
        ``--key value`` and ``--flag`` tokens, in increasing priority.

    Returns
    -------
    command : list of str
        The merged tokens, each key once, at its last position.

    Raises
    ------
    SystemExit
        When a token where a key is expected does not start with ``--``.

    Example
    -------
    >>> merge_overrides(["--lr", "0.1", "--noprogressbar"], ["--lr", "0.2"])
    ['--noprogressbar', '--lr', '0.2']
    """
    merged = {}
    for group in groups:
        tokens = list(group)
        while tokens:
            key = tokens.pop(0)
            if not key.startswith("--"):
                raise SystemExit(f"study.py: expected --key value, got {key!r}")
            value = (
                tokens.pop(0)
                if tokens and not tokens[0].startswith("--")
                else None
            )
            merged.pop(key, None)  # the later value, in the later position
            merged[key] = value
    command = []
    for key, value in merged.items():
        command += [key] if value is None else [key, value]
    return command


def stage_command(system, args, overrides):
    """The train.py command line of one system.

    Arguments
    ---------
    system : str
        A system of :data:`ctsl_brain.analysis.SYSTEMS`.
    args : argparse.Namespace
        The study's options, from :func:`parse_arguments`.
    overrides : list of str
        train.py overrides for every stage.

    Returns
    -------
    command : list of str
        The launcher, ``train.py``, the hparams file and the overrides.

    Example
    -------
    >>> args, overrides = parse_arguments(
    ...     ["--corpus", "manifests", "--data_folder", "d"]
    ... )
    >>> stage_command("RM", args, overrides)[-4:]
    ['--lambda_tl', '0', '--lambda_cl', '0']
    """
    hparams_file, system_overrides = SYSTEMS[system]
    stage = "teacher" if system == "Original" else "student"
    common = ["--corpus", args.corpus, "--data_folder", args.data_folder]
    common += [
        "--results_folder",
        args.results_folder,
        "--seed",
        str(args.seed),
    ]
    epochs = getattr(args, f"{stage}_epochs")
    if epochs is None and args.corpus == "demo":
        epochs = DEMO_EPOCHS[stage]
    if epochs is not None:
        common += ["--number_of_epochs", str(epochs)]
    demo = (
        [*DEMO_OVERRIDES, *DEMO_STAGE_OVERRIDES[stage]]
        if args.corpus == "demo"
        else []
    )
    system_overrides = [
        args.field_folder if token == FIELD_FOLDER_MARKER else token
        for token in system_overrides
    ]
    return [
        *shlex.split(args.launcher),
        "train.py",
        hparams_file,
        *merge_overrides(common, demo, overrides, system_overrides),
    ]


def output_folder(system, args):
    """The output folder of one system's train.py run.

    Arguments
    ---------
    system : str
        A system of :data:`ctsl_brain.analysis.SYSTEMS`.
    args : argparse.Namespace
        The study's options, from :func:`parse_arguments`.

    Returns
    -------
    folder : str
        ``<results_folder>/<corpus>/<experiment name>/<seed>``.

    Example
    -------
    >>> args, _ = parse_arguments(["--results_folder", "/r", "--seed", "1"])
    >>> output_folder("RM+TL", args)
    '/r/demo/rm_tl/1'
    """
    # The student systems' first override is their --experiment_name.
    name = "teacher" if system == "Original" else SYSTEMS[system][1][1]
    return os.path.join(args.results_folder, args.corpus, name, str(args.seed))


def _marked_command(marker):
    """The command a stage finished with, from its marker.

    [] when there is none (or a marker written by another version that cannot
    be read: the stage then runs again).
    """
    try:
        with open(marker) as fin:
            return list(json.load(fin)["command"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _stage_to_run(number, total, system, args, overrides, study_folder, log):
    """A stage's command, output folder and marker; None, logged, when it finished
    earlier with the same command (launcher aside)."""
    command = stage_command(system, args, overrides)
    folder = output_folder(system, args)
    marker = os.path.join(study_folder, "stages", f"{system}.json")
    if (
        os.path.isfile(os.path.join(folder, "evaluation.json"))
        and _marked_command(marker)[1:] == command[1:]
    ):
        log(
            f"stage {number}/{total} {system}: finished earlier ({folder}), skipped"
        )
        return None
    return command, folder, marker


def _stage_done(number, total, system, command, marker, seconds, log):
    """Records that a stage finished with ``command`` in ``seconds``, and logs it."""
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    record = {"command": command, "seconds": seconds}
    write_text_atomic(marker, json.dumps(record, indent=2))
    log(f"stage {number}/{total} {system}: done in {_duration(seconds)}")


def run_stage(number, total, system, args, overrides, study_folder, log):
    """Runs one system's train.py unless it finished with the same command.

    A stage that fails ends the study with its exit status; running the study
    again resumes it.

    Arguments
    ---------
    number : int
        The stage's number, from 1, for the log.
    total : int
        The number of stages, for the log.
    system : str
        A system of :data:`ctsl_brain.analysis.SYSTEMS`.
    args : argparse.Namespace
        The study's options, from :func:`parse_arguments`.
    overrides : list of str
        train.py overrides for every stage.
    study_folder : str
        The study's folder, where the marker of each finished stage is kept.
    log : Progress
        Where progress goes.
    """
    stage = _stage_to_run(
        number, total, system, args, overrides, study_folder, log
    )
    if stage is None:
        return
    command, folder, marker = stage
    log(f"stage {number}/{total} {system}: {shlex.join(command)}")
    start = time.monotonic()
    done = subprocess.run(
        command, cwd=ROOT, check=False, preexec_fn=_end_with_parent
    )
    if done.returncode != 0:
        log(
            f"stage {number}/{total} {system} failed (exit status {done.returncode}); its log "
            f"is {os.path.join(folder, 'log.txt')}. Run the study again to resume."
        )
        sys.exit(done.returncode)
    _stage_done(
        number, total, system, command, marker, time.monotonic() - start, log
    )


def _end_with_parent():
    """Run in a child before it starts: it gets SIGTERM when the study ends, even killed
    (Linux), so that no orphan trains on while a resumed study runs the same stage."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tail(path, lines=15):
    """The last ``lines`` lines of a text file ("" when it cannot be read)."""
    try:
        with open(path, errors="replace") as fin:
            return "".join(fin.readlines()[-lines:])
    except OSError:
        return ""


def _threads_env(threads):
    """This process' environment with ``threads`` OpenMP and MKL threads, unless the user set them."""
    env = dict(os.environ)
    # Two jobs each on all the cores would fight over them; a user's own setting stays.
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_stages_at_once(numbered, total, args, overrides, study_folder, log):
    """Runs stages ``args.jobs`` at a time, each on its share of the CPU cores.

    Each stage's output goes to ``<study_folder>/stages/<system>.out``. The
    stages are started from the last of ``numbered`` to the first: in the
    study's order that starts the longest first (the field system's, which
    also extracts its noise) and ends with RH (the head alone). When a stage
    fails, the running ones finish, no other starts, and the study ends with
    the failed stage's exit status; running the study again resumes it.

    Arguments
    ---------
    numbered : list of tuple
        ``(number, system)`` of each stage, in the study's order.
    total : int
        The number of stages, for the log.
    args : argparse.Namespace
        The study's options, from :func:`parse_arguments` (``jobs``).
    overrides : list of str
        train.py overrides for every stage.
    study_folder : str
        The study's folder, where the marker of each finished stage is kept.
    log : Progress
        Where progress goes.
    """
    env = _threads_env(max(1, _cores() // args.jobs))
    queue, running, failed = list(reversed(numbered)), [], []
    try:
        while running or (queue and not failed):
            while queue and not failed and len(running) < args.jobs:
                number, system = queue.pop(0)
                stage = _stage_to_run(
                    number, total, system, args, overrides, study_folder, log
                )
                if stage is None:
                    continue
                command, _, marker = stage
                output = os.path.join(study_folder, "stages", f"{system}.out")
                os.makedirs(os.path.dirname(output), exist_ok=True)
                log(
                    f"stage {number}/{total} {system}: {shlex.join(command)} "
                    f"(on {env['OMP_NUM_THREADS']} threads, output in {output})"
                )
                with open(output, "w") as out:
                    process = subprocess.Popen(
                        command,
                        cwd=ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        preexec_fn=_end_with_parent,
                    )
                running.append(
                    (
                        process,
                        number,
                        system,
                        command,
                        marker,
                        output,
                        time.monotonic(),
                    )
                )
            time.sleep(0.5)
            for job in list(running):
                process, number, system, command, marker, output, start = job
                if process.poll() is None:
                    continue
                running.remove(job)
                if process.returncode == 0:
                    _stage_done(
                        number,
                        total,
                        system,
                        command,
                        marker,
                        time.monotonic() - start,
                        log,
                    )
                    continue
                failed.append(process.returncode)
                print(_tail(output), end="", flush=True)
                log(
                    f"stage {number}/{total} {system} failed (exit status "
                    f"{process.returncode}); its output is {output}"
                    + (
                        ", waiting for the stages still running"
                        if running
                        else ""
                    )
                )
    finally:
        for (
            process,
            *_,
        ) in running:  # the study was interrupted: so are its stages
            process.terminate()
        for process, *_ in running:
            process.wait()
    if failed:
        log("Run the study again to resume.")
        sys.exit(failed[0])


def study_folder_of(args):
    """The folder of one seed's tables, figure and stage records.

    Arguments
    ---------
    args : argparse.Namespace
        The study's options, ``seed`` the seed's.

    Returns
    -------
    folder : str
        ``<results_folder>/<corpus>/study/<seed>``.
    """
    return os.path.join(
        args.results_folder, args.corpus, "study", str(args.seed)
    )


def analyse_seed(args, study_folder, log):
    """Writes one seed's tables, figure and predictions, and prints Tables 1 and 2.

    Arguments
    ---------
    args : argparse.Namespace
        The study's options, ``seed`` the seed's.
    study_folder : str
        The seed's study folder.
    log : Progress
        Where progress goes.
    """
    total = len(args.systems) + 1
    log(
        f"stage {total}/{total} analysis: tables, figure and predictions in {study_folder}"
    )
    runs = {system: output_folder(system, args) for system in args.systems}
    settings = None
    for folder in runs.values():
        with open(os.path.join(folder, "evaluation.json")) as fin:
            settings = json.load(fin).get("infonce", settings)
    outputs = analyse_study(
        runs,
        study_folder,
        n_groups=args.n_groups,
        group_seed=args.group_seed,
        infonce=settings,
    )
    with open(outputs["files"]["table1_md"]) as fin:
        print(fin.read())
    with open(outputs["files"]["table2_md"]) as fin:
        print(fin.read())
    log(f"study done: {', '.join(sorted(outputs['files'].values()))}")


def run_seed(args, overrides):
    """Runs every stage of one seed here, then its analysis.

    Arguments
    ---------
    args : argparse.Namespace
        The study's options, ``seed`` the seed's.
    overrides : list of str
        train.py overrides for every stage.

    Returns
    -------
    study_folder : str
        Where the seed's tables went.
    """
    study_folder = study_folder_of(args)
    # One study per folder: a second one stops before it runs a stage.
    with FolderLock(study_folder, what="runs a study in"):
        log = Progress(study_folder)
        total = len(args.systems) + 1
        numbered = list(enumerate(args.systems, start=1))
        # Original first, alone: the other systems start from it.
        run_stage(1, total, "Original", args, overrides, study_folder, log)
        if args.jobs > 1 and len(numbered) > 2:
            run_stages_at_once(
                numbered[1:], total, args, overrides, study_folder, log
            )
        else:
            for number, system in numbered[1:]:
                run_stage(
                    number, total, system, args, overrides, study_folder, log
                )
        analyse_seed(args, study_folder, log)
    return study_folder


def _executor(args, jobs_folder):
    """A submitit executor for ``args.cluster``, with the per-job resources."""
    try:
        import submitit
    except ImportError:
        raise MissingInputError(
            f"--cluster {args.cluster} needs submitit: pip install -r requirements-cluster.txt "
            "(or pip install .[cluster])"
        ) from None

    try:
        executor = submitit.AutoExecutor(
            folder=jobs_folder, cluster=args.cluster
        )
    except RuntimeError as error:  # submitit: no srun, so no Slurm here
        raise MissingInputError(
            f"--cluster {args.cluster}: {error} Run the study where sbatch and srun are, "
            "or with --cluster local or none"
        ) from None
    parameters = {"name": "ctsl", "timeout_min": args.slurm_time}
    if args.cluster == "slurm":
        parameters.update(
            gpus_per_node=args.slurm_gpus,
            cpus_per_task=args.slurm_cpus,
            # A preempted job is requeued; train.py then resumes from its checkpoints.
            slurm_additional_parameters={"requeue": True, **args.slurm_extra},
        )
        if args.slurm_partition:
            parameters["slurm_partition"] = args.slurm_partition
        if args.slurm_mem:
            parameters["mem_gb"] = args.slurm_mem
    executor.update_parameters(**parameters)
    return executor


def _recorded_job(record_path, command, args, jobs_folder):
    """The job submitted earlier for this stage, if it is still queued or running."""
    if (
        args.cluster != "slurm"
    ):  # local jobs end with the study that started them
        return None
    try:
        with open(record_path) as fin:
            record = json.load(fin)
    except (OSError, ValueError):
        return None
    if record.get("command") != command or record.get("cluster") != "slurm":
        return None
    import submitit

    job = submitit.SlurmJob(folder=jobs_folder, job_id=str(record["job_id"]))
    return job if job.state in QUEUED_OR_RUNNING else None


def run_on_cluster(args, overrides):
    """Runs every seed's stages as jobs through submitit, then each seed's analysis.

    Each stage is one job, its output in ``<study>/jobs`` and its id in
    ``stages/<system>.job.json`` of its seed's study folder. A stage already
    finished is skipped; one whose Slurm job is still queued or running is
    waited for, not submitted again. On Slurm the students depend on their
    teacher's job (``afterok``); on the local executor they start when it has
    finished.

    Arguments
    ---------
    args : argparse.Namespace
        The study's options (``seeds``, ``cluster``, the ``slurm_*`` ones).
    overrides : list of str
        train.py overrides for every stage.

    Returns
    -------
    study_folders : dict or None
        Seed -> study folder; None after ``--submit_only``.
    """
    jobs_folder = os.path.join(
        args.results_folder, args.corpus, "study", "jobs"
    )
    executor = _executor(args, jobs_folder)
    seeds = [
        argparse.Namespace(**{**vars(args), "seed": seed})
        for seed in args.seeds
    ]
    folders = {s.seed: study_folder_of(s) for s in seeds}
    with contextlib.ExitStack() as stack:
        for folder in folders.values():
            stack.enter_context(FolderLock(folder, what="runs a study in"))
        logs = {seed: Progress(folder) for seed, folder in folders.items()}
        total = len(args.systems) + 1
        jobs = []  # (seed_args, number, system, command, marker, job, start)

        def to_run(seed_args, number, system):
            """The stage's command, folder and marker; None when it finished earlier."""
            return _stage_to_run(
                number,
                total,
                system,
                seed_args,
                overrides,
                folders[seed_args.seed],
                logs[seed_args.seed],
            )

        def submit(
            seed_args, number, system, stage, dependency=None, threads=None
        ):
            """Submits a stage from :func:`to_run` (or finds its job); returns its job or None."""
            if stage is None:
                return None
            log, study_folder = logs[seed_args.seed], folders[seed_args.seed]
            command, _, marker = stage
            record = os.path.join(study_folder, "stages", f"{system}.job.json")
            job = _recorded_job(record, command, args, jobs_folder)
            if job is not None:
                log(
                    f"stage {number}/{total} {system}: job {job.job_id} submitted earlier, "
                    f"{job.state.lower()}"
                )
            else:
                import submitit

                stage_executor = executor
                if dependency is not None:
                    stage_executor = _executor(args, jobs_folder)
                    stage_executor.update_parameters(
                        slurm_dependency=f"afterok:{dependency.job_id}"
                    )
                env = None if threads is None else _threads_env(threads)
                job = stage_executor.submit(
                    submitit.helpers.CommandFunction(command, cwd=ROOT, env=env)
                )
                os.makedirs(os.path.dirname(record), exist_ok=True)
                write_text_atomic(
                    record,
                    json.dumps(
                        {
                            "cluster": args.cluster,
                            "job_id": job.job_id,
                            "command": command,
                        },
                        indent=2,
                    ),
                )
                log(
                    f"stage {number}/{total} {system}: job {job.job_id} "
                    f"({shlex.join(command)}; "
                    + (f"on {env['OMP_NUM_THREADS']} threads, " if env else "")
                    + f"its output in {jobs_folder})"
                )
            jobs.append(
                (
                    seed_args,
                    number,
                    system,
                    command,
                    marker,
                    job,
                    time.monotonic(),
                )
            )
            return job

        students = [
            (s, number, system)
            for s in seeds
            for number, system in list(enumerate(args.systems, start=1))[1:]
        ]
        if args.cluster == "local":
            # No dependencies and no queue there: the teachers first, then the
            # students, --jobs at a time, each wave sharing the cores.
            for stages in ([(s, 1, "Original") for s in seeds], students):
                stages = [(*stage, to_run(*stage)) for stage in stages]
                stages = [stage for stage in stages if stage[-1] is not None]
                for start in range(0, len(stages), args.jobs):
                    wave = stages[start : start + args.jobs]
                    for stage in wave:
                        submit(*stage, threads=max(1, _cores() // len(wave)))
                    _wait_for(jobs, total, logs)
                    jobs.clear()
        else:
            teachers = {
                s.seed: submit(s, 1, "Original", to_run(s, 1, "Original"))
                for s in seeds
            }
            for stage in students:
                submit(*stage, to_run(*stage), teachers[stage[0].seed])
        if args.submit_only:
            for log in logs.values():
                log(
                    "submitted; run the same command again to wait for the jobs and "
                    "write the tables"
                )
            return None
        _wait_for(jobs, total, logs)
        for s in seeds:
            analyse_seed(s, folders[s.seed], logs[s.seed])
    return folders


def _wait_for(jobs, total, logs):
    """Waits for ``jobs`` to end; records those that finished, reports those that failed.

    A failed job ends the study with status 1, once every other job has ended,
    with the tail of its output.
    """
    failed, teacher_failed = [], set()
    for seed_args, number, system, command, marker, job, start in jobs:
        log = logs[seed_args.seed]
        if seed_args.seed in teacher_failed:
            # Its afterok dependency can never be met: it would wait forever.
            job.cancel(check=False)
            log(
                f"stage {number}/{total} {system}: job {job.job_id} cancelled, "
                "its teacher failed"
            )
            continue
        try:
            job.result()
        except Exception as error:  # submitit: the job failed or was cancelled
            paths = job.paths
            print(_tail(str(paths.stdout)) + _tail(str(paths.stderr)), end="")
            reason = str(error).strip().splitlines()
            log(
                f"stage {number}/{total} {system} failed (job {job.job_id}"
                + (f": {reason[0]}" if reason else "")
                + f"); its output is {paths.stdout}"
            )
            failed.append(system)
            if system == "Original":
                teacher_failed.add(seed_args.seed)
            continue
        _stage_done(
            number,
            total,
            system,
            command,
            marker,
            time.monotonic() - start,
            log,
        )
    if failed:
        print("Run the study again to resume.", flush=True)
        sys.exit(1)


def main(argv=None):
    """Runs the study under each seed, then, over several, Table 1 over seeds.

    Arguments
    ---------
    argv : list of str or None
        The command line's arguments; None: ``sys.argv[1:]``.
    """
    args, overrides = parse_arguments(sys.argv[1:] if argv is None else argv)
    if args.cluster == "none":
        folders = {}
        for seed in args.seeds:
            folders[seed] = run_seed(
                argparse.Namespace(**{**vars(args), "seed": seed}), overrides
            )
    else:
        folders = run_on_cluster(args, overrides)
    if folders is None or len(folders) < 2:
        return
    seeds_folder = os.path.join(
        args.results_folder,
        args.corpus,
        "study",
        "seeds_" + "_".join(str(seed) for seed in args.seeds),
    )
    with FolderLock(seeds_folder, what="writes the tables over seeds in"):
        outputs = analyse_seeds(folders, seeds_folder)
        with open(outputs["files"]["table1_md"]) as fin:
            print(fin.read())
        if outputs["field_gain"] is not None:
            with open(outputs["files"]["field_gain_md"]) as fin:
                print(fin.read())
        Progress(seeds_folder)(
            f"seeds done: {', '.join(sorted(outputs['files'].values()))}"
        )


if __name__ == "__main__":
    sys.exit(run_command(main))
