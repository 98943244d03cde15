"""What `prov train` shows and how its process ends (issue #24, "what the ML engineer compares against").

- The progress display never shows a stale ε as current: exact at the start and at each checkpoint, the next
  checkpoint's ε as an upper bound in between (once computed), "next at step N" before that.
- `prov train` as a process skips the interpreter's teardown once the run is complete (`provenance.cli.
  request_fast_exit`), yet still joins non-daemon threads, runs atexit handlers and flushes its output; a caller
  that passes argv to `main()` (tests, embedding) is never cut short.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from provenance import progress

ROOT = Path(__file__).resolve().parents[2]


def test_progress_epsilon_is_exact_at_checkpoints_and_a_bound_between(monkeypatch: pytest.MonkeyPatch) -> None:
    from training.progress import Progress

    monkeypatch.delenv(progress.ENV, raising=False)
    log = io.StringIO()
    shown = Progress(total=10, stream=log)
    shown.epsilon, shown.epsilon_step = 0.0, 0
    shown.epsilon_next = (5, None)
    shown.update(1, 1.0, force=True)
    shown.epsilon_next = (5, 0.75)
    shown.update(2, 1.0, force=True)
    shown.epsilon, shown.epsilon_step = 0.75, 5
    shown.update(5, 1.0, force=True)
    lines = log.getvalue().splitlines()
    assert "ε next at step 5" in lines[0] and "0.000" not in lines[0]
    assert "ε ≤ 0.750 (step 5)" in lines[1]
    assert "ε 0.750 " in lines[2] and "≤" not in lines[2]
    off = io.StringIO()
    Progress(total=10, stream=off).update(3, 1.0, force=True)  # non-private: epsilon stays None
    assert "ε off" in off.getvalue()


def test_epsilon_schedule_ready_never_waits() -> None:
    from training.plan import EpsilonSchedule

    class _Plan:
        private = True

    schedule = EpsilonSchedule.__new__(EpsilonSchedule)
    schedule.plan = _Plan()  # type: ignore[assignment]
    schedule._pool = None
    from concurrent.futures import Future

    pending: Future[float | None] = Future()
    done: Future[float | None] = Future()
    done.set_result(1.5)
    failed: Future[float | None] = Future()
    failed.set_exception(ValueError("accountant failed"))
    schedule._futures = {4: pending, 8: done, 12: failed}
    assert schedule.ready(4) is None and schedule.ready(8) == 1.5 and schedule.ready(12) is None
    assert schedule.ready(16) is None  # not a checkpoint step: not computed here either


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)


def test_fast_exit_still_joins_threads_runs_atexit_and_flushes(tmp_path: Path) -> None:
    done = _python("""
        import atexit, sys, threading, time
        from pathlib import Path
        from provenance import cli
        atexit.register(lambda: Path("atexit.txt").write_text("ran"))
        def late():
            time.sleep(0.3)
            Path("thread.txt").write_text("joined")
        threading.Thread(target=late).start()
        print("summary on a pipe, still buffered")
        sys.argv = ["prov", "--version"]
        cli.request_fast_exit()
        sys.exit(cli.main())
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "summary on a pipe, still buffered" in done.stdout and "prov" in done.stdout
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert (tmp_path / "thread.txt").read_text() == "joined"


def test_fast_exit_keeps_the_exit_code_and_ignores_callers_that_pass_argv(tmp_path: Path) -> None:
    done = _python("""
        import sys
        from provenance import cli
        cli.request_fast_exit()
        assert cli.main(["--version"]) == 0  # argv given: returns, the process goes on
        print("still running")
        sys.argv = ["prov", "no-such-command"]
        sys.exit(cli.main())
    """, tmp_path)
    assert "still running" in done.stdout
    assert done.returncode == 2 and "no-such-command" in done.stderr


@pytest.mark.slow
def test_prov_train_process_ends_with_a_complete_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The real entry point: a 2-step anchored run (in-process chain) exits 0 with its JSON summary printed and
    every file of the run in place (final checkpoint, step log, final PEFT directory)."""
    from training.data import DEMO_DATA

    config = tmp_path / "prov.toml"
    config.write_text(f'[model]\npath = "{tiny_model_dir}"\n[data]\npath = "{DEMO_DATA}"\nmax_length = 32\n'
                      "[training]\nsteps = 2\nbatch_size = 8\nthreads = 1\ncheckpoint_every = 1\n"
                      '[anchor]\nchain = "tester"\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROV_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "provenance", "train", str(config), "--out", "run", "--json"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary: dict[str, Any] = json.loads(done.stdout)
    assert summary["steps"] == 2 and summary["checkpoints"] == 3 and summary["anchored"] is True
    run = tmp_path / "run"
    assert len((run / "steps.jsonl").read_text().splitlines()) == 2
    assert (run / "final").is_dir() and any((run / "final").iterdir())
    assert not list((run / "checkpoints").glob("*.tmp*"))
