"""The task wrapper: which failures are the user's (one line) and which are bugs (one line and a traceback
file), and a run log that a full disk does not turn into a traceback per record."""

import errno
import logging

import pytest

from dpn_lab.errors import ConfigError, DataError, DivergenceError
from dpn_lab.runs import task
from dpn_lab.runs.job_log import TolerantFileHandler


@pytest.mark.parametrize(
    "error, users",
    [
        (ConfigError("model.x=1 is not allowed"), True),
        (DataError("no files"), True),
        (DivergenceError("nan"), True),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EFBIG, "File too large"), True),
        (ValueError("a library's own check"), False),  # counted as the user's before: a bug hid in one line
        (FileNotFoundError(errno.ENOENT, "a path the code computed"), False),
        (KeyError("x"), False),
    ],
)
def test_only_the_packages_errors_and_the_machines_file_errors_are_the_users(error, users):
    assert task.is_user_error(error) is users


def test_a_bug_in_a_run_keeps_its_traceback_and_reaches_the_command_as_its_failure(make_cfg, tmp_path):
    cfg = make_cfg()

    def work(output_dir, multirun):
        raise ValueError("an internal invariant broke")

    try:
        assert task.run_task(cfg, work) is None
        error = task.failed_run.error
        saved = tmp_path / "run" / task.TRACEBACK_FILE
        assert isinstance(error, ValueError)
        assert task.one_line(error) == (
            f"ValueError: an internal invariant broke (an unexpected error: traceback in {saved})"
        )
        assert 'raise ValueError("an internal invariant broke")' in saved.read_text()
        assert '"status": "failed"' in (tmp_path / "run" / "result.json").read_text()
    finally:
        task.failed_run.error = None


def test_a_traceback_that_cannot_be_written_is_said_in_the_line(tmp_path):
    try:
        raise KeyError("x")
    except KeyError:
        note = task.keep_traceback(tmp_path / "missing" / "traceback.txt")
    assert note.startswith("(an unexpected error; its traceback could not be written to ")
    assert note.endswith(": No such file or directory)")


def test_a_log_file_on_a_full_disk_is_one_warning_and_the_run_goes_on(capsys):
    handler = TolerantFileHandler("/dev/full")
    logger = logging.getLogger("dpn_lab.test_job_log")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for i in range(5):
            logger.warning(f"record {i}")
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "warning: the run's log /dev/full cannot be written (No space left on device); it stops here"
    ]
    assert "Logging error" not in err and handler.failed
