"""tfrec.logs: start-up noise filter, CLI log format, progress reporting."""

from __future__ import annotations

import logging
import warnings

import pytest

from tfrec import logs

# Lines TensorFlow 2.21 wrote to stderr while importing on a CPU-only machine.
TF_STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795986680.494066    6758 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results.",
    "I0000 00:00:1795986680.495049    6758 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "I0000 00:00:1795986680.538295    6758 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1795986683.221423    6758 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    # The pre-2.17 format of the same message.
    "2024-01-11 05:40:05.061907: I tensorflow/core/platform/cpu_feature_guard.cc:182] This "
    "TensorFlow binary is optimized to use available CPU instructions.",
]


@pytest.mark.parametrize("line", TF_STARTUP)
def test_tensorflow_startup_lines_are_noise(line):
    assert logs.is_startup_noise(line)


@pytest.mark.parametrize(
    "line",
    [
        # A C++ error from an op is not about the machine: kept.
        "E0000 00:00:1795986683.221423    6758 op_kernel.cc:1840] OP_REQUIRES failed at "
        "save_restore_v2_ops.cc:119 : PERMISSION_DENIED: /out/ckpt",
        "W0000 00:00:1795986683.221423    6758 cpu_allocator_impl.cc:83] Allocation of 400000000 "
        "exceeds 10% of free system memory.",
        "Traceback (most recent call last):",
        "warning: something the user should read",
    ],
)
def test_other_lines_are_kept(line):
    assert not logs.is_startup_noise(line)


@pytest.fixture
def restore_logging(monkeypatch):
    """Undoes what configure() changes in this process."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in logs.NOISY_LOGGERS}
    monkeypatch.delenv(logs.TF_LOG_LEVEL_ENV, raising=False)
    with warnings.catch_warnings():
        yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)
    logging.captureWarnings(False)
    logs._State.tty = False


def test_configure_quiet_then_verbose(restore_logging, capsys):
    logs.configure(verbose=False, import_tensorflow=False)
    logs.configure(verbose=False, import_tensorflow=False)  # again: still one handler
    assert sum(isinstance(h, logs._CliHandler) for h in logging.getLogger().handlers) == 1
    assert logging.getLogger("absl").level == logging.ERROR
    assert logs.os.environ[logs.TF_LOG_LEVEL_ENV] == logs.QUIET_TF_LOG_LEVEL
    log = logging.getLogger("tfrec.test_logs")
    log.debug("hidden")
    log.info("plain")
    log.warning("careful")
    logging.getLogger("absl").info("Sharding callback duration: 14 microseconds")
    assert capsys.readouterr().err == "plain\nwarning: careful\n"

    logs.configure(verbose=True, import_tensorflow=False)
    log.debug("shown")
    logging.getLogger("absl").info("Sharding callback duration: 14 microseconds")
    err = capsys.readouterr().err.splitlines()
    assert [line[9:] for line in err] == [  # after "HH:MM:SS "
        "DEBUG tfrec.test_logs: shown",
        "INFO absl: Sharding callback duration: 14 microseconds",
    ]


def test_configure_keeps_the_users_tf_log_level(restore_logging, monkeypatch):
    monkeypatch.setenv(logs.TF_LOG_LEVEL_ENV, "1")
    logs.configure(verbose=False, import_tensorflow=False)
    assert logs.os.environ[logs.TF_LOG_LEVEL_ENV] == "1"


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_logs_one_line_per_interval(monkeypatch, caplog):
    clock = _Clock()
    monkeypatch.setattr(logs.time, "monotonic", clock)
    caplog.set_level(logging.INFO, logger="tfrec.logs")
    progress = logs.Progress("job", total=10, unit="items", every_seconds=10.0)
    for seconds, done in [(4, 1), (9, 2), (11, 3), (15, 4), (22, 8)]:
        clock.now = 100.0 + seconds
        progress.update(done)
    # t=11: 3 done, 3/11 = 0.27/s, (10 - 3) / (3/11) = 25.7 s left; t=22: 8/22 = 0.36/s,
    # 2 / (8/22) = 5.5 s left (rounded half to even: 6 s).
    assert [r.getMessage() for r in caplog.records] == [
        "job: 3/10 items (0.27/s, ~26s left)",
        "job: 8/10 items (0.36/s, ~6s left)",
    ]
    assert progress.reported


def test_progress_draws_and_erases_a_bar_on_a_terminal(monkeypatch, capsys, restore_logging):
    clock = _Clock()
    monkeypatch.setattr(logs.time, "monotonic", clock)
    monkeypatch.setenv("COLUMNS", "100")  # the bar is cut to the terminal's width
    logs.configure(verbose=False, import_tensorflow=False)
    monkeypatch.setattr(logs._State, "tty", True)
    progress = logs.Progress("job", total=10, unit="items", every_seconds=10.0)
    clock.now += 0.5
    progress.update(2)  # under a second: no bar yet
    assert capsys.readouterr().err == ""
    clock.now += 1.5
    progress.update(5)  # 5/10: 10 of 20 cells; 5 items in 2 s = 2.50/s, 5 left = 2 s
    bar = "[##########..........] job: 5/10 items (2.50/s, ~2s left)"
    assert capsys.readouterr().err == "\r" + bar
    logging.getLogger("tfrec.test_logs").info("a log line")  # erases the bar first
    assert capsys.readouterr().err == "\r" + " " * len(bar) + "\r" + "a log line\n"
    clock.now += 1.0
    progress.update(10)  # finished: nothing left on the line
    assert capsys.readouterr().err == ""
    assert progress.close() == pytest.approx(3.0)


def test_format_seconds():
    assert [logs.format_seconds(s) for s in (0.4, 59.6, 185, 3720)] == [
        "0s",
        "1m00s",
        "3m05s",
        "1h02m",
    ]
