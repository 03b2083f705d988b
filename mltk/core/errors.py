"""Errors a user can act on, each with the exit code the CLI returns.

Every error mltk raises on purpose is an ``MltkError``: one line saying what
went wrong (which file, which key) and a ``hint`` saying what to do next. The
CLI prints ``error: <message>`` and ``hint: <hint>`` on stderr and exits with
``exit_code``; anything else is a bug and keeps its traceback.

Exit codes (also in ``mltk --help``):
    0 ok, 1 runtime failure, 2 usage or config error,
    3 artifact or data missing or corrupt, 4 an eval threshold not met,
    130 interrupted (a resumable checkpoint was written).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_MISSING = 3
EXIT_THRESHOLD = 4
EXIT_INTERRUPTED = 130


class MltkError(Exception):
    """Base class: a one-line ``message`` and an optional next step ``hint``."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(MltkError):
    """A bad command line: unknown recipe, bad reference syntax, bad name."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """One or more config problems, all listed at once."""

    def __init__(self, problems: list[str], source: str = "config", hint: str | None = None):
        self.problems = list(problems)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        message = f"{source}: {count}: " + "; ".join(self.problems)
        super().__init__(message, hint)


class ArtifactError(MltkError):
    """An artifact or file that is missing, unreadable, corrupt or unsafe."""

    exit_code = EXIT_MISSING


class DataMissingError(ArtifactError):
    """A dataset whose files are not where mltk looked for them."""


class ThresholdNotMet(MltkError):
    """``mltk eval --min`` found the metric below the threshold."""

    exit_code = EXIT_THRESHOLD


class Interrupted(MltkError):
    """Training stopped by Ctrl-C or SIGTERM after writing a checkpoint."""

    exit_code = EXIT_INTERRUPTED
