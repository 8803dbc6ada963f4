"""GaussPainter trained as two processes, for real: `accelerate launch --multi_gpu --num_processes 2 -m
exgs_core.painter train ...` on this CPU-only machine (torchrun starts the processes, gloo connects them),
against single-process runs of the same command with the same seed and the same global batch.

The models are tiny and the runs a few steps on 8 tiny pairs, so each launch takes 10-25 s on 2 busy cores
(the suite's --durations list shows this module's tests; no test asserts a time, which the other test process
on the same cores can stretch).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from exgs_core.painter import __main__ as painter_main
from exgs_core.painter.commands import SESSION_END_EXIT
from exgs_core.painter.data import MANIFEST_NAME
from exgs_core.painter.train import (
    PairBank,
    disagreement,
    load_checkpoint,
    single_process_launch_warning,
    weights_digest,
)
from exgs_core.painter.weights import load_painter
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]

TINY = {"vae_channels": 8, "stem_channels": 4, "unet_channels": [16, 16], "unet_attention": False}
# Measured (2 processes vs 1, 3 + 3 steps at lr 3e-3): the per-step losses agree to the 5 logged decimals,
# frames within 6e-8, parameters within 2.8e-6 here (5.7e-6 after 1 -> 2 -> 1 processes); on 4 other tiny
# pairs up to 4e-4, in the UNet: its gradients start at zero behind its zero-initialised output conv, and
# Adam divides tiny gradients by their own size, which magnifies float rounding (frames still within 1.2e-7).
FRAME_TOLERANCE = 1e-5
PARAMETER_TOLERANCE = 2e-3
LOSS_TOLERANCE = 2e-5  # the log rounds to 5 decimals
# The audit hook that lists what each process writes under a folder: Python's own record of every file it
# opens for writing, creates, renames or removes (run at start-up as sitecustomize, so the command is unchanged).
WRITES_PROBE = '''
import atexit, json, os, sys
_watch, _report = os.environ["EXGS_TEST_WATCH"], os.environ["EXGS_TEST_WRITES"]
_writes = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
def _path(value):
    try:
        return os.path.abspath(os.fsdecode(value))
    except TypeError:
        return ""
def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
        paths = [_path(path)] if writing and isinstance(path, (str, bytes, os.PathLike)) else []
    elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree", "shutil.move"):
        paths = [_path(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
    else:
        return
    _writes.extend(f"{event} {p}" for p in paths if p.startswith(_watch))
def _save():
    with open(os.path.join(_report, f"writes-{os.environ.get('RANK', 'launcher')}-{os.getpid()}.json"), "w") as f:
        json.dump(_writes, f)
atexit.register(_save)
sys.addaudithook(_hook)
'''


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """8 tiny pairs in make_pairs' layout: smooth 40 px targets, inputs with holes (alpha 0) and noise."""
    out = tmp_path_factory.mktemp("tiny_pairs")
    (out / "tiny").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    samples = []
    for view in range(8):
        target = np.stack([np.sin(6 * xx + view), np.cos(5 * yy - view), xx * yy], axis=-1) * 0.5 + 0.5
        alpha = (rng.uniform(size=(40, 40)) > 0.2).astype(np.float64)
        raw = np.clip(target * alpha[..., None] + rng.normal(0, 0.05, target.shape), 0, 1)
        Image.fromarray((target * 255).astype(np.uint8)).save(out / "tiny" / f"{view:03d}_target.png")
        rgba = np.concatenate([raw, alpha[..., None]], axis=-1)
        Image.fromarray((rgba * 255).astype(np.uint8)).save(out / "tiny" / f"{view:03d}_0_input.png")
        samples.append({"id": f"tiny/{view:03d}_0", "input": f"tiny/{view:03d}_0_input.png",
                        "target": f"tiny/{view:03d}_target.png", "ratio": 50.0, "target_ratio": 50.0})
    manifest = {"scenes": [{"name": "tiny", "split": "train", "captured": True, "samples": samples}]}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    return out


def _args(pairs: Path, out: Path, batch_size: int = 4, vae_steps: int = 3, **settings) -> list[str]:
    """The train command's options: 3 VAE steps, 3 painter steps, a global batch of 4 crops of 32 px."""
    overrides = {"painter_config": TINY, "warmup_steps": 1, **settings}
    return ["train", "--data", str(pairs), "-o", str(out), "--vae-steps", str(vae_steps), "--steps", "3", "--batch-size",
            str(batch_size), "--crop", "32", "--lr", "3e-3", "--seed", "3", "--threads", "1",
            "--settings", json.dumps(overrides)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(args: list[str], extra_env: dict | None = None, wait: bool = True):
    """`accelerate launch --multi_gpu --num_processes 2 -m exgs_core.painter ARGS` (CUDA hidden: CPU processes)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "NUMBA_THREADING_LAYER": "workqueue", **(extra_env or {})}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "exgs_core.painter", *args]
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    if not wait:
        return process
    stdout, stderr = process.communicate(timeout=180)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _run_here(args: list[str]) -> int:
    """The same command in this process (one process); the exit code (3 when a session allowance ended)."""
    try:
        return painter_main.main(args)
    except SystemExit as end:
        return int(end.code)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("exgs: error:")]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _assert_same_training(run: Path, reference: Path, pairs: Path) -> None:
    """`run` trained what `reference` trained: the same steps and losses, frames and parameters within tolerance."""
    got, want = _log(run), _log(reference)
    assert [(r["stage"], r["step"]) for r in got] == [(r["stage"], r["step"]) for r in want]  # nothing twice
    loss = max(abs(a["loss"] - b["loss"]) for a, b in zip(got, want))
    model, expected = load_painter(run / "weights", device="cpu"), load_painter(reference / "weights", device="cpu")
    rgb, mask, _ = PairBank(pairs).batch(np.random.default_rng(5), 8, 32)
    with torch.no_grad():
        frames = float((model(rgb, mask) - expected(rgb, mask)).abs().max())
    ours, theirs = model.state_dict(), expected.state_dict()
    parameters = max(float((ours[k] - theirs[k]).abs().max()) for k in ours)
    print(f"{run.parent.name}/{run.name} vs one process: losses {loss:.1e}, frames {frames:.1e}, "
          f"parameters {parameters:.1e}")  # shown with pytest -s
    assert loss <= LOSS_TOLERANCE and frames <= FRAME_TOLERANCE and parameters <= PARAMETER_TOLERANCE


@pytest.fixture(scope="module")
def reference(pairs, tmp_path_factory) -> Path:
    """The single-process run, uninterrupted (in this process)."""
    out = tmp_path_factory.mktemp("one_process") / "run"
    assert _run_here(_args(pairs, out)) == 0
    return out


def test_two_processes_train_what_one_process_trains_and_only_process_0_writes(pairs, reference, tmp_path) -> None:
    out, reports = tmp_path / "two", tmp_path / "writes"
    reports.mkdir()
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "sitecustomize.py").write_text(WRITES_PROBE)
    done = _launch(_args(pairs, out), {"PYTHONPATH": os.pathsep.join([str(tmp_path / "probe"), str(REPO_ROOT)]),
                                       "EXGS_TEST_WATCH": str(out), "EXGS_TEST_WRITES": str(reports)})
    assert done.returncode == 0, done.stderr[-3000:]

    _assert_same_training(out, reference, pairs)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["processes"] == 2 and (state["progress"]["stage"], state["progress"]["step"]) == ("painter", 3)
    digest = weights_digest(load_painter(out / "weights", device="cpu"))
    assert state["weights_sha256"] == [digest, digest]  # what each process held is what process 0 wrote

    writes = {path.name.split("-")[1]: json.loads(path.read_text()) for path in reports.glob("writes-*.json")}
    assert set(writes) == {"0", "1", "launcher"}, sorted(writes)
    assert writes["1"] == [] and writes["launcher"] == []
    assert any("weights" in w for w in writes["0"]) and any("checkpoint" in w for w in writes["0"])


def test_a_checkpoint_resumes_across_a_change_of_process_count(pairs, reference, tmp_path) -> None:
    """1 process for 2 steps, 2 processes for 3 more (across the stage change), 1 process to the end."""
    out = tmp_path / "run"
    assert _run_here(_args(pairs, out, session_steps=2)) == SESSION_END_EXIT
    assert load_checkpoint(out)[2].step == 2
    done = _launch(_args(pairs, out, session_steps=3))
    assert done.returncode != 0 and "session allowance used up at painter step 2" in done.stdout, done.stderr[-3000:]
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["processes"] == 2 and (state["progress"]["stage"], state["progress"]["step"]) == ("painter", 2)
    assert not (out / "weights").exists()
    assert _run_here(_args(pairs, out)) == 0
    _assert_same_training(out, reference, pairs)


def test_a_batch_the_processes_cannot_share_is_refused_before_anything_is_written(pairs, tmp_path) -> None:
    done = _launch(_args(pairs, tmp_path / "run", batch_size=3))
    assert done.returncode != 0
    assert set(_errors(done.stderr)) == {"exgs: error: --batch-size 3 is not a multiple of the 2 training processes: "
                                         "it is the global batch, and each process takes an equal share of it"}
    assert not (tmp_path / "run").exists()


def test_a_process_that_dies_stops_the_run_without_writing_weights(pairs, tmp_path) -> None:
    out = tmp_path / "run"
    run = _launch(_args(pairs, out, vae_steps=100_000, checkpoint_every=2), wait=False)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "log.jsonl").is_file() and (out / "log.jsonl").read_text().count("\n") >= 3):
            assert run.poll() is None and time.monotonic() < deadline, "the run did not start training"
            time.sleep(0.1)
        workers = [p for p in psutil.Process(run.pid).children(recursive=True) if p.environ().get("RANK") == "1"]
        assert len(workers) == 1
        workers[0].send_signal(signal.SIGKILL)  # what the out-of-memory killer does
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    assert "exitcode  : -9" in stderr and "rank      : 1" in stderr  # the launcher's report names the process
    lines = _errors(stderr)  # process 0 says why it stopped, unless the launcher ended it first
    assert all(" lost contact with the others at vae step " in line and "no weights written, a rerun resumes "
               f"from {out / 'checkpoint'} (vae step " in line for line in lines), lines
    assert not (out / "weights").exists()
    model, optimizer_state, progress = load_checkpoint(out)  # the last checkpoint is whole
    assert progress.stage == "vae" and progress.step >= 2 and progress.step % 2 == 0
    steps = len(_log(out))
    assert _run_here(_args(pairs, out, vae_steps=100_000, checkpoint_every=2, session_steps=1)) == SESSION_END_EXIT
    assert _log(out)[-1]["step"] == progress.step + 1 and len(_log(out)) == steps + 1  # it resumes


def test_a_checkpoint_is_resumed_only_with_the_settings_it_was_trained_with(pairs, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert _run_here(_args(pairs, out, session_steps=2)) == SESSION_END_EXIT
    before = _files(out)
    capsys.readouterr()
    assert _run_here(_args(pairs, out, batch_size=2)) == 1
    assert _errors(capsys.readouterr().err) == [
        f"exgs: error: {out / 'checkpoint'}: the checkpoint was trained with batch_size 4 and this run asks for 2 "
        "(--batch-size is the global batch, whatever the process count); resume with the checkpoint's value or "
        "train into another --out"]
    assert _run_here(_args(pairs, out, painter_config={**TINY, "vae_channels": 16})) == 1
    assert "the checkpoint was trained with painter_config {" in capsys.readouterr().err
    assert _files(out) == before  # nothing written
    spelt_out = {**TINY, "output": "residual", "timestep": 199}  # the same model, defaults written out
    assert _run_here(_args(pairs, out, painter_config=spelt_out, session_steps=1)) == SESSION_END_EXIT


def test_processes_that_disagree_are_named() -> None:
    assert disagreement("the weights", ["a1", "a1", "a1"], "nothing written") is None
    assert disagreement("the weights", ["a1"], "nothing written") is None
    assert disagreement("the weights after vae step 4", ["a1", "b2", "a1", "c3"], "the checkpoint was not updated") == (
        "the 4 training processes disagree on the weights after vae step 4 (process 1, 3 differs from process 0); "
        "the checkpoint was not updated")


def test_accelerate_launch_cpu_with_several_processes_warns_that_it_started_one() -> None:
    """accelerate's own launcher builds the environment: --cpu runs one process, and the painter says so."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    def environment(*options: str) -> tuple[list[str], dict]:
        args = launch_command_parser().parse_args([*options, "--num_machines", "1", "--mixed_precision", "no",
                                                   "--dynamo_backend", "no", "-m", "exgs_core.painter", "train"])
        return prepare_simple_launcher_cmd_env(_validate_launch_command(args)[0])

    command, env = environment("--cpu", "--num_processes", "2")
    assert command[:3] == [sys.executable, "-m", "exgs_core.painter"]  # one process, no mpirun
    assert "--multi_gpu --num_processes N" in single_process_launch_warning(env)
    assert single_process_launch_warning(environment("--cpu", "--num_processes", "1")[1]) is None
    assert single_process_launch_warning({**env, "WORLD_SIZE": "2", "RANK": "0"}) is None  # torchrun's processes
    assert single_process_launch_warning({}) is None
