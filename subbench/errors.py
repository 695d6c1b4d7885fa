"""User-facing errors: each one is a single sentence that says what to do."""


class SubbenchError(Exception):
    """An error the CLI prints as one line and exits with ``exit_code``."""

    exit_code = 1


class ConfigError(SubbenchError):
    """A problem in an experiment file or a ``--set`` override."""

    exit_code = 2


class UnknownName(SubbenchError):
    """A name that is not in a registry."""

    exit_code = 2
