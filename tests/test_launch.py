"""The launch scripts: SLURM's task environment, the multi-node hostfile, the Make targets per scale."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY, assert_one_line_error, data_args, free_port, read_metrics, run_cli


@pytest.mark.distributed
def test_slurm_tasks_form_one_job(kjv_data, tmp_path):
    """Two tasks as srun would start them on one node (launch/slurm_task.sh maps SLURM_* to RANK etc.)."""
    common = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHON": sys.executable, "SLURM_NTASKS": "2",
              "SLURM_NTASKS_PER_NODE": "2(x1)", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    args = ["launch/slurm_task.sh", "--config", "configs/tiny.yaml", *data_args(kjv_data), *TINY,
            "train.max_steps=6", "train.log_interval=3", "train.eval_interval=6", "sample.max_new_tokens=0",
            f"run_dir={tmp_path}"]
    tasks = [subprocess.Popen(args, cwd=ROOT, env={**common, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outputs = [t.communicate(timeout=600)[0] for t in tasks]
    assert [t.returncode for t in tasks] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "2 rank(s)" in outputs[0]
    assert [r["tokens"] for r in read_metrics(tmp_path)] == [3 * 2 * 8 * 64, 6 * 2 * 8 * 64]


def test_multinode_counts_the_hostfile_slots_and_calls_the_launcher(kjv_data, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# two nodes\nnode1 slots=2\nnode2 slots=1\n")
    env = {"HOSTFILE": str(hostfile), "PYTHON": sys.executable, "DEEPSPEED": "echo"}
    args = ["launch/multinode.sh", "configs/tiny.yaml", *data_args(kjv_data), *TINY]
    # 3 ranks x micro-batch 8 cannot make a global batch of 16: the dry run sees the hostfile's world size.
    assert_one_line_error(run_cli([*args, "train.global_batch=16"], env=env), "train.global_batch", "3")
    proc = run_cli([*args, "train.global_batch=24"], env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"--hostfile {hostfile} --master_port 29500 --module resnetbk.train")
    assert_one_line_error(run_cli(args, env={**env, "HOSTFILE": str(tmp_path / "nope")}), "HOSTFILE", "not found")


def make_dry_run(*args) -> str:
    """The last command `make -n` would run (under `make test` the outer make's flags are dropped)."""
    proc = run_cli(["make", "--no-print-directory", "-n", *args], env={"MAKEFLAGS": "", "MAKELEVEL": ""})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_make_targets_pair_each_scale_with_its_preset():
    for scale in ("small", "base", "1b", "3b", "7b"):
        line = make_dry_run(scale, "PROFILE=h100", "NGPUS=4", "ARGS=train.max_steps=5")
        assert ("NGPUS=4" in line
                and f"launch/local.sh configs/{scale}.yaml deepspeed.profile=h100 train.max_steps=5" in line)
    line = make_dry_run("7b", "HOSTFILE=hosts")
    assert "launch/multinode.sh configs/7b.yaml" in line and "HOSTFILE=hosts" in line
