"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class PlannerError(ValueError):
    """Bad input or an impossible request; the message names the problem and the fix."""


class UnsupportedModelError(PlannerError):
    """The model's architecture is not one the planner can cut."""
