"""Errors a user can act on: each says what is wrong and where (file, line, key or value)."""


class MDWError(Exception):
    """Base class: a clear, user-facing error (the CLI prints it without a traceback)."""


class DataError(MDWError):
    """A data source cannot be read: names the file, line or key at fault."""


class ConfigError(MDWError):
    """A configuration value is out of range or unknown: names the key and the value."""


class ModelError(MDWError):
    """A model preset, architecture or checkpoint cannot be built or loaded."""


class DivergenceError(MDWError):
    """A training loop met a non-finite loss, parameter or step size: names the stage, the epoch,
    iteration or step, the quantity, and what to change (usually a learning rate to lower)."""

    def __init__(self, stage: str, at: str, quantity: str, hint: str = ""):
        self.stage, self.at, self.quantity, self.hint = stage, at, quantity, hint
        text = f"{stage}: {quantity} is not finite (NaN or inf) at {at}; the stage was stopped"
        super().__init__(text + (f"; {hint}" if hint else ""))


class RunError(MDWError):
    """A run folder or run id is invalid, or a run cannot be started / cancelled."""


class Cancelled(Exception):
    """Raised inside a run when a cancel was requested; the run ends in state `cancelled`."""
