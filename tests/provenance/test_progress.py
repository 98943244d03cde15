"""Progress bars (provenance.progress, tqdm): drawn with rate and ETA on a terminal, absent when the stream is not a
terminal, under --json (`silenced`) and with PROV_PROGRESS=0; the trainer's progress uses them."""

from __future__ import annotations

import io

import pytest

from provenance import progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal_and_never_when_silenced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.ENV, raising=False)
    assert not progress.enabled(io.StringIO()) and progress.enabled(FakeTerminal())
    with progress.silenced():
        assert not progress.enabled(FakeTerminal())
    with progress.silenced(False):
        assert progress.enabled(FakeTerminal())
    monkeypatch.setenv(progress.ENV, "0")
    assert not progress.enabled(FakeTerminal())
    monkeypatch.setenv(progress.ENV, "1")
    assert progress.enabled(io.StringIO())


def test_a_bar_shows_count_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.ENV, raising=False)
    screen = FakeTerminal()
    with progress.bar("replay", total=4, unit="segment", stream=screen) as bar:
        bar.advance(2)
        bar.note("segment 3")
        bar._impl.refresh()  # type: ignore[union-attr]
    text = screen.getvalue()
    assert "replay" in text and "2/4" in text and "<" in text and "segment" in text  # elapsed<remaining
    piped = io.StringIO()
    with progress.bar("replay", total=4, stream=piped) as bar:
        bar.advance(4)
        assert not bar.active
    assert piped.getvalue() == ""


def test_polled_bars_follow_a_counter_and_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.delenv(progress.ENV, raising=False)
    screen = FakeTerminal()
    done = [0]
    with progress.polled("verify", total=3, count=lambda: done[0], unit="check", stream=screen):
        done[0] = 3
        time.sleep(0.5)
    assert "3/3" in screen.getvalue()


def test_training_progress_is_a_bar_on_a_terminal_and_lines_with_eta_otherwise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from training.progress import Progress

    monkeypatch.delenv(progress.ENV, raising=False)
    screen = FakeTerminal()
    bar = Progress(total=10, stream=screen)
    bar.epsilon = 0.5
    for step in range(1, 6):
        bar.update(step, 1.25, force=True)
    bar.message("checkpoint 1 written")
    bar.finish()
    text = screen.getvalue()
    assert "5/10" in text and "loss 1.2500" in text and "ε 0.500" in text and "checkpoint 1 written" in text
    log = io.StringIO()
    lines = Progress(total=10, stream=log)
    lines.update(5, 1.0)
    assert "step 5/10" in log.getvalue() and "ETA" in log.getvalue() and "\r" not in log.getvalue()
    silent = io.StringIO()
    Progress(total=10, stream=silent, quiet=True).update(5, 1.0)
    assert silent.getvalue() == ""


def test_store_get_shows_bytes_out_of_the_declared_size(tmp_path: object, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A store transfer's bar counts the bytes read (every block is charged to the fetch's budget) against the
    file's declared size, so it has a rate and an ETA."""
    from pathlib import Path

    from provenance.cli import main

    root = Path(str(tmp_path))
    monkeypatch.setenv(progress.ENV, "1")  # bars on, though captured output is not a terminal
    source = root / "weights.bin"
    source.write_bytes(bytes(range(256)) * 1200)  # 300 KiB: several blocks
    assert main(["store", "--store", f"local:{root / 'store'}", "put", str(source)]) == 0
    cid = capsys.readouterr().out.strip()
    assert main(["store", "--store", f"local:{root / 'store'}", "get", cid, str(root / "out.bin")]) == 0
    err = capsys.readouterr().err
    assert "store get" in err and "/300k" in err and "B/s" in err, err  # bytes of the declared size, a rate
    assert (root / "out.bin").read_bytes() == source.read_bytes()
