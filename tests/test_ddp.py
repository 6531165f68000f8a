"""Several processes through PyTorch's DDP, as `torchrun --nproc_per_node=N train.py ...` runs
them: two CPU processes with the gloo backend must end with identical student weights."""

import glob
import os
import re
import sys

import pytest
import torch
from recipe_run import (
    demo_arguments,
    run_checked,
    run_train,
    tiny_run_arguments,
)

pytestmark = pytest.mark.slow

DEMO = demo_arguments(n_train=16)


def test_two_gloo_processes_end_with_identical_student_weights(tmp_path):
    results = tmp_path / "results"
    data_folder = str(tmp_path / "demo")
    run_train(
        "hparams/teacher.yaml", results, "--data_folder", data_folder, *DEMO
    )

    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    command = [
        torchrun,
        "--nproc_per_node=2",
        "--master_port=29517",
        "tests/ddp_probe.py",
        str(tmp_path),
        "hparams/student.yaml",
        *tiny_run_arguments(results, number_of_epochs=2),
        "--data_folder",
        data_folder,
        *DEMO,
        "--distributed_backend",
        "gloo",
        "--device",
        "cpu",
    ]
    run_checked(command)

    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][key], ranks[1][key]) for key in ranks[0])

    # The student did train, and one process wrote the checkpoints and the log.
    teacher_ckpt = glob.glob(
        str(results / "demo/teacher/1986/save/CKPT+*/encoder.ckpt")
    )[0]
    teacher = torch.load(teacher_ckpt)
    assert any(
        not torch.equal(ranks[0][f"encoder.{key}"], teacher[key])
        for key in teacher
    )
    run = results / "demo" / "rm_tl_cl" / "1986"
    assert len(glob.glob(str(run / "save" / "CKPT+*"))) == 2
    log = (run / "train_log.txt").read_text()
    assert re.findall(r"^epoch: (\d+)/2", log, re.M) == ["1", "2"]
    assert (run / "evaluation.json").is_file()
