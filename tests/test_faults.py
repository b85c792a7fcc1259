"""Runs a team can leave alone: kills at any moment, a dying rank, non-finite steps, out of memory at start-up.

Resumes are compared bitwise with an uninterrupted run (fp32 on CPU, 2 ranks: the same arithmetic in the
same order, so nothing less than equality is acceptable).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import ROOT, TINY, assert_one_line_error, data_args, deepspeed_launcher, read_metrics, run_cli

pytestmark = pytest.mark.distributed

STEPS = 40
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1"}
COMPARED = ("step", "loss", "lm_loss", "moe_balance_loss", "lr", "tokens", "epoch", "grad_norm", "skipped_steps")


def launch_args(kjv, run_dir, *extra):
    return [*deepspeed_launcher(), "--module", "resnetbk.train", "--config", "configs/tiny.yaml",
            *data_args(kjv), *TINY, f"train.max_steps={STEPS}", "train.log_interval=1", f"train.eval_interval={STEPS}",
            "train.keep_checkpoints=2", "sample.max_new_tokens=0", f"run_dir={run_dir}", *extra]


def curve(run_dir):
    return [{k: r.get(k) for k in COMPARED} for r in read_metrics(run_dir)]


def last_step(run_dir) -> int:
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            lines = [line for line in f if line.endswith("\n")]
    except FileNotFoundError:
        return 0
    return json.loads(lines[-1])["step"] if lines else 0


def start(args):
    # A session of its own, so that the whole job (launcher and ranks) can be killed at once.
    return subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def rank_process(launcher: subprocess.Popen, rank: int) -> psutil.Process:
    deadline = time.time() + 120
    while time.time() < deadline:
        for p in psutil.Process(launcher.pid).children(recursive=True):
            try:
                if f"--local_rank={rank}" in " ".join(p.cmdline()):
                    return p
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.2)
    raise AssertionError(f"rank {rank} never started")


@pytest.fixture(scope="module")
def reference(kjv_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    proc = run_cli(launch_args(kjv_data, run_dir, "train.save_interval=5"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return curve(run_dir)


def test_a_rank_killed_at_a_random_step_ends_the_job_and_resume_auto_continues_bitwise(kjv_data, reference, tmp_path):
    kill_at = random.Random().randint(7, STEPS - 7)
    run_dir = tmp_path / "run"
    job = start(launch_args(kjv_data, run_dir, "train.save_interval=5", "train.collective_timeout_min=1"))
    victim = rank_process(job, 1)
    while last_step(run_dir) < kill_at:
        assert job.poll() is None, job.stdout.read()[-3000:]
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    killed = time.time()
    try:
        job.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        pytest.fail(f"the job still ran 90 s after rank 1 was killed at step {kill_at}")
    assert job.returncode != 0, f"killed at step {kill_at}"
    print(f"rank 1 killed after step {kill_at}; the job exited {time.time() - killed:.1f} s later")

    resumed = run_cli(launch_args(kjv_data, run_dir, "train.save_interval=5", "resume=auto"))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout, f"killed at step {kill_at}"
    assert curve(run_dir) == reference, f"killed at step {kill_at}"
    entries = [e for e in os.listdir(run_dir / "checkpoints") if e.startswith(("step", ".tmp"))]
    assert sorted(entries) == ["step00000035", "step00000040"]  # keep_checkpoints=2, no temporaries left


def test_a_job_killed_during_a_save_resumes_from_the_previous_checkpoint_bitwise(kjv_data, reference, tmp_path):
    run_dir = tmp_path / "run"
    root = run_dir / "checkpoints"
    job = start(launch_args(kjv_data, run_dir, "train.save_interval=1"))
    seen = None
    while job.poll() is None:
        temporaries = [t for t in os.listdir(root) if t.startswith(".tmp-")] if root.is_dir() else []
        if temporaries and last_step(run_dir) >= 5:
            os.killpg(job.pid, signal.SIGKILL)
            seen = temporaries[0]
            break
        time.sleep(0.001)
    job.wait()
    assert seen is not None, "the job finished before a save could be interrupted"
    latest = (root / "latest").read_text()
    assert len(list((root / latest).glob("zero_pp_rank_*_mp_rank_00_optim_states.pt"))) == 2, \
        f"latest names {latest}, which is incomplete"

    resumed = run_cli(launch_args(kjv_data, run_dir, "train.save_interval=1", "resume=auto"))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert curve(run_dir) == reference, f"killed while writing {seen}"
    assert not [t for t in os.listdir(root) if t.startswith(".tmp-")]


def test_a_fresh_run_refuses_a_run_dir_that_holds_checkpoints(kjv_data, tmp_path):
    (tmp_path / "checkpoints" / "step00000005").mkdir(parents=True)
    proc = run_cli([sys.executable, "-m", "resnetbk.train", "--config", "configs/tiny.yaml", *data_args(kjv_data),
                    *TINY, "resume=none", f"run_dir={tmp_path}"])
    assert_one_line_error(proc, "run_dir", "resume=auto")


# Single-rank runs of tests/payloads/fault_injection.py: the trainer with NaN losses or out-of-memory errors injected.

def inject(kjv, run_dir, env, *extra):
    return run_cli([sys.executable, "tests/payloads/fault_injection.py", "--config", "configs/tiny.yaml",
                    *data_args(kjv), *TINY, "train.max_steps=10", "train.log_interval=1", "train.eval_interval=10",
                    f"run_dir={run_dir}", *extra], env=env)


def test_non_finite_steps_are_skipped_counted_and_logged(kjv_data, tmp_path):
    proc = inject(kjv_data, tmp_path, {"FAULT_NAN_CALLS": "5,6"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = read_metrics(tmp_path)
    assert [r["skipped_steps"] for r in records] == [0, 0, 0, 0, 1, 2, 2, 2, 2, 2]
    assert records[4]["loss"] is None and records[5]["loss"] is None
    assert all(r["loss"] is not None for r in records[6:])  # the weights survived
    assert "step 6: non-finite gradients, update skipped (2 in a row, 2 in all)" in proc.stdout

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "tensorboard") for f in fs]
    acc = EventAccumulator(events[0])
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/skipped_steps")][-1] == 2


def test_too_many_skipped_steps_in_a_row_stop_the_run(kjv_data, tmp_path):
    proc = inject(kjv_data, tmp_path, {"FAULT_NAN_CALLS": "3-"}, "train.max_consecutive_skips=3")
    assert_one_line_error(proc, "3 steps in a row", "train.max_consecutive_skips", "stopped at step 5")


def test_zero_stage_0_stops_on_a_non_finite_loss_it_applied(kjv_data, tmp_path):
    proc = inject(kjv_data, tmp_path, {"FAULT_NAN_CALLS": "4"}, "deepspeed.strategy=zero0")
    assert_one_line_error(proc, "non-finite training loss at step 4", "ZeRO stage 0")


def oom_run_beside_plain(kjv, tmp_path, fault_env, *plain_batch):
    """A run from micro-batch 8 with out-of-memory faults, and a plain run configured as the faulty one should end
    up (plain_batch): both must log the same curve (same samples, same updates). Returns the faulty run's stdout."""
    plain = inject(kjv, tmp_path / "plain", {}, *plain_batch)
    assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
    proc = inject(kjv, tmp_path / "oom", fault_env, "train.micro_batch=8", "train.grad_accum=1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert curve(tmp_path / "oom") == curve(tmp_path / "plain")
    return proc.stdout


def test_out_of_memory_at_start_up_halves_the_micro_batch(kjv_data, tmp_path):
    out = oom_run_beside_plain(kjv_data, tmp_path, {"FAULT_OOM_ABOVE": "2"}, "train.micro_batch=2",
                               "train.grad_accum=4")
    assert "out of memory at micro-batch 8: retrying with micro-batch 4 x accumulation 2 (global batch 8" in out
    assert "out of memory at micro-batch 4: retrying with micro-batch 2 x accumulation 4 (global batch 8" in out


def test_out_of_memory_with_cuda_graphs_retries_the_same_micro_batch_with_eager_blocks(kjv_data, tmp_path):
    """The graphs' pool holds memory that eager blocks may not need: drop the graphs before halving anything."""
    out = oom_run_beside_plain(kjv_data, tmp_path, {"FAULT_GRAPHS": "oom"}, "train.micro_batch=8", "train.grad_accum=1")
    assert "cuda graphs: 2 blocks at micro-batch 8 x 64" in out
    assert "out of memory at micro-batch 8 with CUDA graphs: retrying with eager blocks" in out
    assert "retrying with micro-batch" not in out


def test_out_of_memory_at_micro_batch_1_stops_with_advice(kjv_data, tmp_path):
    proc = inject(kjv_data, tmp_path, {"FAULT_OOM_ABOVE": "0"}, "train.micro_batch=2", "train.grad_accum=1")
    assert_one_line_error(proc, "out of memory at micro-batch 1", "zero3-offload")
