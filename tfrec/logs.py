"""What the ``tfrec`` command line prints: quiet by default, everything with ``-v``.

:func:`configure` is called once by ``tfrec.cli.main`` before a command runs.

* Default (quiet): log records at INFO and above, formatted for a reader:
  ``message`` for INFO, ``warning: message`` and ``error: message`` above. The
  C++ start-up lines TensorFlow writes while it is imported (oneDNN, CUDA,
  cpu_feature_guard, absl's ``InitializeLog`` notice) are dropped, other
  start-up output is passed through; later C++ messages below FATAL are hidden
  with ``TF_CPP_MIN_LOG_LEVEL=3`` unless that variable is already set. The
  ``absl`` and ``tensorflow`` Python loggers (``Sharding callback duration``,
  ``Assets written to``, Keras's non-interactive progress bar) show ERROR only;
  developer-facing Python warnings (deprecations, library UserWarnings) are
  ignored.
* Verbose: DEBUG and above from every logger as ``HH:MM:SS LEVEL name: message``,
  TensorFlow's own output untouched, every warning shown once.

:class:`Progress` reports long loops: a redrawn one-line bar when the CLI writes
to a terminal, otherwise one log line every ``every_seconds``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings

logger = logging.getLogger(__name__)

TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_TF_LOG_LEVEL = "3"  # C++ INFO, WARNING and ERROR hidden (FATAL still shown)
#: Loggers shown only at ERROR unless -v. ``tfrec_client`` logs one warning per retry of
#: an UNAVAILABLE call; a CLI command reports the final outcome in one line instead.
NOISY_LOGGERS = ("absl", "tensorflow", "tfrec_client")
VERBOSE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
VERBOSE_DATEFMT = "%H:%M:%S"

# Python packages whose UserWarnings are about their own internals, not the user's run.
_LIBRARY_MODULES = (
    r"(tensorflow|tf_keras|keras|tensorflow_recommenders|absl|google\.protobuf)(\.|$)"
)

# One C++ log line, absl style (``I0000 00:00:1795986680.494066    6758 port.cc:153] ...``)
# or the older TensorFlow style (``2024-01-11 05:40:05.061907: I tensorflow/.../port.cc:153] ...``).
_NATIVE_LINE = re.compile(
    r"^(?:(?P<level>[IWEF])\d{4} [\d:.]+\s+\d+ |\d{4}-\d\d-\d\d [\d:.]+: (?P<level2>[IWEF]) )"
    r"(?:\S*/)?(?P<file>[\w.-]+\.cc):\d+\]"
)
# Files whose start-up WARNING/ERROR lines only say "no GPU here" (INFO lines are all dropped).
_NO_GPU_FILES = re.compile(
    r"^(cuda_\w+|cudart_stub|gpu_\w+|dso_loader|tf2tensorrt\w*|\w*tensorrt\w*)\.cc$"
)
_STARTUP_NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "To enable the following instructions:",  # second line of cpu_feature_guard's message
)

_BAR_SECONDS = 0.1  # shortest interval between two redraws of a terminal bar
_BAR_DELAY = 1.0  # no bar for a loop shorter than this (it would only flicker)


class _State:
    """Module state set by :func:`configure`: where bars go and which one is drawn."""

    tty = False  # the CLI writes its log to a terminal: draw bars
    drawn: Progress | None = None  # the bar currently on the terminal line
    drawn_width = 0


def is_startup_noise(line: str) -> bool:
    """Whether ``line`` is one of TensorFlow's start-up lines hidden in quiet mode.

    Dropped: absl's ``InitializeLog`` notice, every C++ INFO line (oneDNN,
    cpu_feature_guard, "Could not find cuda drivers"), the second line of
    cpu_feature_guard's message, and WARNING/ERROR lines of CUDA/TensorRT files
    (``failed call to cuInit`` on a machine without a GPU). Other C++ warnings
    and errors are kept.

    Args:
        line: One line of what TensorFlow wrote to stderr, without the newline.
    """
    text = line.strip()
    if not text or text.startswith(_STARTUP_NOISE):
        return True
    match = _NATIVE_LINE.match(text)
    if match is None:
        return False
    level = match.group("level") or match.group("level2")
    return level == "I" or bool(_NO_GPU_FILES.match(match.group("file")))


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its C++ start-up lines filtered out of stderr.

    TensorFlow >= 2.17 writes them through absl before ``TF_CPP_MIN_LOG_LEVEL``
    is read, so the variable cannot hide them: file descriptor 2 is pointed at a
    temporary file while TensorFlow loads and lists its devices (where CUDA is
    probed), then every line that :func:`is_startup_noise` does not recognise
    is written back to stderr. A failing import writes everything back.
    No-op when TensorFlow is already imported.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2: nothing to filter
        import tensorflow  # noqa: F401, PLC0415

        return
    failed = True
    with tempfile.TemporaryFile() as captured:
        try:
            os.dup2(captured.fileno(), 2)
            import tensorflow as tf  # noqa: PLC0415

            tf.config.list_physical_devices()
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = text.splitlines() if failed else _kept_lines(text)
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


def _kept_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not is_startup_noise(line)]


class _CliFormatter(logging.Formatter):
    """Plain messages for INFO, ``warning:``/``error:`` prefixes above (quiet mode)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        return text


class _CliHandler(logging.Handler):
    """Writes to the current ``sys.stderr``, erasing a progress bar first."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            clear_bar()
            stream = sys.stderr
            stream.write(text + "\n")
            stream.flush()
        except Exception:  # logging's contract: emit never raises
            self.handleError(record)


def _install_handler(verbose: bool) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _CliHandler):  # configure() called again (tests, notebooks)
            root.removeHandler(handler)
    handler = _CliHandler()
    if verbose:
        handler.setFormatter(logging.Formatter(VERBOSE_FORMAT, VERBOSE_DATEFMT))
    else:
        handler.setFormatter(_CliFormatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _configure_warnings(verbose: bool) -> None:
    logging.captureWarnings(True)  # shown through the handler above, one line each
    if verbose:
        warnings.simplefilter("default")
        return
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", category=UserWarning, module=_LIBRARY_MODULES)


def configure(verbose: bool = False, *, import_tensorflow: bool = True) -> None:
    """Sets up logging, warnings and TensorFlow's output for a CLI command.

    Call it once, before anything imports TensorFlow. Calling it again replaces
    the handler it installed (no duplicated lines).

    Args:
        verbose: Show everything: DEBUG records with time, level and logger
            name, TensorFlow's C++ lines, all warnings.
        import_tensorflow: In quiet mode, import TensorFlow now through
            :func:`import_tensorflow_quietly` (every command needs it anyway).
    """
    if not verbose:
        os.environ.setdefault(TF_LOG_LEVEL_ENV, QUIET_TF_LOG_LEVEL)
    _install_handler(verbose)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    _configure_warnings(verbose)
    _State.tty = _stderr_is_terminal()
    if import_tensorflow and not verbose:
        import_tensorflow_quietly()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def clear_bar() -> None:
    """Erases the progress bar on the terminal line, if one is drawn."""
    if _State.drawn is None:
        return
    sys.stderr.write("\r" + " " * _State.drawn_width + "\r")
    sys.stderr.flush()
    _State.drawn = None
    _State.drawn_width = 0


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``1h02m`` (rounded to whole seconds)."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_rate(per_second: float) -> str:
    """A rate with 2 decimals below 10/s, none above (``3.25``, ``412``)."""
    return f"{per_second:.2f}" if per_second < 10 else f"{per_second:.0f}"


class Progress:
    """Reports a long loop: a redrawn bar on a terminal, else a log line per interval.

    The bar is drawn only when :func:`configure` found stderr to be a terminal
    and ``log`` is enabled for INFO, once the loop has run for a second; any
    log record erases it first and the next update draws it again. Otherwise
    :meth:`describe` is logged at INFO at most every ``every_seconds`` (never
    for a loop shorter than that).

    Example::

        progress = Progress("full evaluation", total=len(ids), unit="queries")
        for start in range(0, len(ids), 256):
            ...
            progress.update(min(start + 256, len(ids)))
        progress.close()

    Args:
        label: What is running, e.g. ``"full evaluation"``.
        total: Units of work (None when unknown: no bar or time left).
        unit: Name of a unit, e.g. ``"queries"``.
        every_seconds: Seconds between two log lines when not on a terminal.
        log: Logger of the log lines (default: this module's).

    Attributes:
        reported: Whether at least one progress line or bar was shown.

    Raises:
        ValueError: ``every_seconds <= 0`` or ``total < 0``.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "",
        every_seconds: float = 10.0,
        log: logging.Logger | None = None,
    ):
        if not every_seconds > 0:
            raise ValueError(f"Progress: every_seconds={every_seconds!r}; expected > 0")
        if total is not None and total < 0:
            raise ValueError(f"Progress: total={total}; expected >= 0 or None")
        self.label = label
        self.total = total
        self.unit = unit
        self.every_seconds = every_seconds
        self.log = log or logger
        self.reported = False
        self._start = time.monotonic()
        self._last_line = self._start
        self._last_draw = 0.0

    @property
    def elapsed(self) -> float:
        """Seconds since the progress was created."""
        return time.monotonic() - self._start

    def describe(self, done: int, elapsed: float, detail: str = "") -> str:
        """One progress line, e.g. ``full evaluation: 512/943 queries (410/s, ~1s left)``.

        Subclasses may override it (the terminal bar shows it after the bar).
        """
        rate = done / max(elapsed, 1e-9)
        text = f"{self.label}: {done}"
        if self.total is not None:
            text += f"/{self.total}"
        text += f" {self.unit}".rstrip() + f" ({format_rate(rate)}/s"
        if self.total is not None and rate > 0:
            text += f", ~{format_seconds((self.total - done) / rate)} left"
        text += ")"
        return f"{text}, {detail}" if detail else text

    def update(self, done: int, detail: str = "") -> None:
        """Records that ``done`` units are finished; reports when it is time.

        Args:
            done: Units finished so far.
            detail: Extra text for the line or bar (e.g. ``"loss=0.4210"``).
        """
        now = time.monotonic()
        finished = self.total is not None and done >= self.total
        if _State.tty and self.log.isEnabledFor(logging.INFO):
            if finished:
                self.close()
            elif now - self._start >= _BAR_DELAY and now - self._last_draw >= _BAR_SECONDS:
                self._last_draw = now
                self._draw(done, now - self._start, detail)
        elif now - self._last_line >= self.every_seconds:
            self._last_line = now
            self.reported = True
            self.log.info("%s", self.describe(done, now - self._start, detail))

    def _draw(self, done: int, elapsed: float, detail: str) -> None:
        width = shutil.get_terminal_size((80, 24)).columns - 1
        text = self.describe(done, elapsed, detail)
        if self.total:
            filled = int(20 * min(done, self.total) / self.total)
            text = f"[{'#' * filled}{'.' * (20 - filled)}] {text}"
        text = text[:width]
        if _State.drawn is not None and _State.drawn is not self:
            clear_bar()
        sys.stderr.write("\r" + text.ljust(_State.drawn_width))
        sys.stderr.flush()
        _State.drawn, _State.drawn_width = self, max(len(text), _State.drawn_width)
        self.reported = True

    def close(self) -> float:
        """Erases this progress's bar (if drawn) and returns the elapsed seconds."""
        if _State.drawn is self:
            clear_bar()
        return self.elapsed
