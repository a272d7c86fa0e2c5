import logging

from untrac.progress import LogProgress, tqdm


def test_off_a_terminal_loops_report_as_periodic_log_lines(caplog, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    caplog.set_level(logging.INFO, logger="untrac.progress")
    bar = tqdm(range(5), desc="unlearn d1", every=0)
    assert isinstance(bar, LogProgress)
    assert list(bar) == [0, 1, 2, 3, 4]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("unlearn d1: at 1/5") and lines[-1].startswith("unlearn d1: done 5/5")
    assert not any("\r" in line for line in lines)


def test_quick_loops_stay_silent(caplog, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    caplog.set_level(logging.INFO, logger="untrac.progress")
    with tqdm(total=3, desc="eval") as bar:
        bar.update(3)
        bar.set_postfix(loss="1.0")
    assert caplog.records == []

