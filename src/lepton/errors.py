"""Errors that Lepton raises for bad input: each carries one readable message.

Every error a user can cause (a bad config, a missing file or column, a malformed value, a run
directory that already exists, a diverging run) is a :class:`LeptonError`. The CLI prints its
message on one line and exits non-zero; nothing from deep inside torch reaches the user.
"""

from __future__ import annotations


class LeptonError(Exception):
    """Base class of every error caused by input that Lepton can explain."""


class ConfigError(LeptonError, ValueError):
    """A configuration value is missing, unknown or of the wrong type (names the field path)."""


class DataError(LeptonError, ValueError):
    """A data file, column or value is missing or malformed (names file, column and row)."""


class RunDirError(LeptonError):
    """A run directory is missing, or exists when it should not."""


class BundleError(LeptonError):
    """A model bundle is missing, incomplete or from an incompatible version."""


class TrainingError(LeptonError, RuntimeError):
    """Training cannot go on (for example a loss became NaN); the last good state was kept."""


class MissingDependencyError(LeptonError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ExportError(LeptonError):
    """A model cannot be exported, or the exported graph does not reproduce the model."""


class ServeError(LeptonError):
    """The prediction service cannot start with the options given (bad token file, limits)."""
