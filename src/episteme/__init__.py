"""Episteme: the on-call memory and copilot for infrastructure that AI agents help run."""

from episteme.errors import EpistemeError
from episteme.ledger import Ledger

__version__ = "0.1.0"
__all__ = ["EpistemeError", "Ledger", "__version__"]
