"""Two `fmnist tune` workers on one study, one killed with SIGKILL in the middle of a trial.

The test (test_tune_workers.py) and benchmarks/tune_kill.py run :func:`kill_one_worker` and
check its :class:`Outcome`: the dead worker's trial failed and retried once by the survivor,
every other trial finished, no trial lost or run twice, the best value the best finished
trial's.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A seed CNN of width 8, 3 epochs on 480 training images: a couple of seconds a trial.
TINY = {
    "preset": "seed",
    "model_args": {"width": 8, "hidden": 32},
    "epochs": 3,
    "limit_train": 600,
    "threads": 1,
}
HEARTBEAT = 1  # seconds; a trial silent for 3 beats (3 s) is failed
# Per worker: the survivor must still start trials once the dead one is stale (on a quiet fast
# machine, 6 trials with 2 s beats ended before the grace period: the dead trial stayed RUNNING).
TRIALS = 8


@dataclass
class Outcome:
    """What the study holds once the surviving worker has finished."""

    trials: list[Any]  # optuna FrozenTrials, by number
    killed: int  # the killed worker's pid
    survivor: int  # the surviving worker's pid
    dead: int  # the number of the trial that was running when its worker was killed
    survivor_code: int  # the survivor's exit status
    survivor_output: str
    out: Path  # the trial run directories

    def retries(self) -> list[Any]:
        """Trials that rerun a failed trial's parameters."""
        return [t for t in self.trials if "failed_trial" in t.system_attrs]

    def lost(self) -> int:
        """Trials never finished: left running or waiting, or failed and never retried."""
        retried = {t.system_attrs["failed_trial"] for t in self.retries()}
        unfinished = [t for t in self.trials if t.state.name in ("RUNNING", "WAITING")]
        unretried = [t for t in self.trials if t.state.name == "FAIL" and t.number not in retried]
        no_result = [
            t for t in self.trials if t.state.name == "COMPLETE" and not _metrics(t).is_file()
        ]
        return len(unfinished) + len(unretried) + len(no_result)

    def duplicated(self) -> int:
        """Trials run more than once: a parameter set or run directory twice, bar one retry."""
        params = Counter(json.dumps(t.params, sort_keys=True) for t in self.trials)
        dirs = Counter(t.user_attrs.get("run_dir") for t in self.trials)
        extra_params = sum(n - 1 for n in params.values()) - min(1, len(self.retries()))
        extra_retries = max(0, len(self.retries()) - 1)
        return extra_params + extra_retries + sum(n - 1 for n in dirs.values())


def _metrics(trial: Any) -> Path:
    return Path(trial.user_attrs["run_dir"]) / "metrics.json"


def worker(config: Path, storage: str, out: Path, study: str) -> subprocess.Popen:
    """One `fmnist tune` process (the README's command with a tiny config)."""
    cmd = [sys.executable, "-m", "fmnist", "tune", "--config", str(config), "--storage", storage,
           "--study", study, "--out", str(out), "--search", "lr", "--trials", str(TRIALS),
           "--heartbeat", str(HEARTBEAT), "--quiet"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _running_trial(study: Any, pid: int) -> int | None:
    """The number of ``pid``'s trial that has reported an epoch and is still running."""
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "RUNNING" and t.user_attrs.get("pid") == pid and t.intermediate_values:
            return t.number
    return None


def kill_one_worker(storage: str, work: Path, timeout: float = 300) -> Outcome:
    """Start two workers together, SIGKILL one after a trial's first epoch, let the other end."""
    import optuna

    from fmnist.storage import storage_url

    config = work / "tiny.json"
    config.write_text(json.dumps(TINY))
    out, study_name = work / "runs", "kill"
    a, b = (worker(config, storage, out, study_name) for _ in range(2))
    deadline = time.monotonic() + timeout
    try:
        dead = None
        while dead is None:
            assert a.poll() is None, f"worker A ended before it was killed:\n{a.stdout.read()}"
            assert time.monotonic() < deadline, "worker A never started a trial"
            time.sleep(0.05)
            try:
                study = optuna.load_study(study_name=study_name, storage=storage_url(storage))
            except KeyError:  # not created yet
                continue
            dead = _running_trial(study, a.pid)
        a.send_signal(signal.SIGKILL)  # no chance to tell the storage
        a.wait()
        output, _ = b.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()
    study = optuna.load_study(study_name=study_name, storage=storage_url(storage))
    return Outcome(study.get_trials(), a.pid, b.pid, dead, b.returncode, output, out)
