"""Errors the profilers raise for bad input; the CLI turns them into one-line messages, exit code 2."""


class ProfileError(ValueError):
    """A profile cannot run as asked (bad device, runtime, shape, provider); the message says the fix."""


class TableFormatError(ValueError):
    """A latency table file is corrupt, incomplete, from another schema, or for another model."""
