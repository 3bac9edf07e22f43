"""Kill one of two study workers, again and again: trials lost or run twice (goal: 0).

    python benchmarks/tune_kill.py [--repeats 5] [--storage sqlite,postgresql]

Each repeat is the test tests/integration/test_tune_workers.py runs: two `fmnist tune`
processes start together on one new study (a tiny seed CNN, 3 epochs a trial, the trials
per worker and --heartbeat of tests/integration/workers.py), one is killed with SIGKILL
once a trial of its own has reported an epoch, and the other finishes. PostgreSQL is a
throwaway server started for the run (it needs Debian's postgresql package), SQLite a new
file per repeat. Prints, per repeat, the trials in the study, the failed and retried ones,
and the trials lost and duplicated.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from pgserver import Postgres, Unavailable, start_postgres
from workers import kill_one_worker

from fmnist.system import git_commit, hardware


def one(kind: str, pg: Postgres | None, work: Path) -> tuple[int, int]:
    """One kill test on a new study; prints its line and returns (lost, duplicated)."""
    storage = pg.url(pg.create_database()) if pg else f"sqlite:///{work / 'study.db'}"
    t0 = time.perf_counter()
    o = kill_one_worker(storage, work)
    states = [t.state.name for t in o.trials]
    lost, dup = o.lost(), o.duplicated()
    if o.survivor_code != 0:
        lost += 1  # the survivor did not finish its trials
    print(f"  {kind:10s}  {len(o.trials):2d} trials  {states.count('FAIL')} failed  "
          f"{len(o.retries())} retried  {states.count('COMPLETE')} complete  "
          f"{states.count('PRUNED')} pruned  lost {lost}  duplicated {dup}  "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    return lost, dup


def main() -> None:
    """Repeat the kill test on each storage and print the totals."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--storage", default="sqlite,postgresql")
    args = ap.parse_args()
    print(f"hardware: {hardware()}; commit {git_commit()}")
    kinds = args.storage.split(",")
    pg = None
    if "postgresql" in kinds:
        try:
            pg = start_postgres()
        except Unavailable as e:
            sys.exit(str(e))
    try:
        for kind in kinds:
            totals = [0, 0]
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as d:
                    lost, dup = one(kind, pg if kind == "postgresql" else None, Path(d))
                totals[0] += lost
                totals[1] += dup
            print(f"{kind}: {args.repeats} kill tests, {totals[0]} trials lost, "
                  f"{totals[1]} duplicated")  # fmt: skip
    finally:
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    main()
