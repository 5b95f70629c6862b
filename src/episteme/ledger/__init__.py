"""The ledger: a bitemporal, append-only, hash-chained knowledge base for agents."""

from episteme.ledger.core import Ledger
from episteme.ledger.lenses import BUILTIN, LensSpec
from episteme.ledger.model import Answer, Assertion, AssertionInput, Hidden, Kind, Lifecycle

__all__ = [
    "BUILTIN",
    "Answer",
    "Assertion",
    "AssertionInput",
    "Hidden",
    "Kind",
    "Ledger",
    "LensSpec",
    "Lifecycle",
]
