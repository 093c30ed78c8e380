"""Errors a user can cause. The CLI prints them as one line and exits non-zero;
any other exception is a bug and keeps its traceback."""

import os


class AlexsuiteError(Exception):
    """Base class: the message says what went wrong and how to fix it."""


class DataError(AlexsuiteError):
    """A dataset, folder or annotation that cannot be used."""


class ImageDecodeError(DataError):
    """One file that is not a readable image."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        # a name that is not UTF-8 prints with U+FFFD, never as a repr or an encoding error
        super().__init__(f"{os.fsencode(self.path).decode('utf-8', 'replace')}: {reason}")

    def __reduce__(self):  # DataLoader workers send these back to the main process by pickling
        return (type(self), (self.path, self.reason))


class CheckpointError(AlexsuiteError):
    """A checkpoint that is missing, corrupt, or made for another model."""


class DiskSpaceError(AlexsuiteError):
    """Not enough free disk for what a stage is about to write; nothing written so far is lost."""


class TrainingDiverged(AlexsuiteError):
    """The loss stopped being a finite number: nothing of the epoch it happened in is saved."""


class ConfigError(AlexsuiteError):
    """Options that contradict each other or name something unknown."""


class MissingExtra(AlexsuiteError):
    """An optional dependency (one of the package's pip extras) that is not installed; the
    message names the extra to install."""
