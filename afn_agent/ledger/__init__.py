"""The ledger: SQLite (WAL) source of truth for jobs, sessions, usage records, outbox and audit."""

from .db import LedgerError
from .states import IllegalTransition, JobClock
from .store import Ledger
from .tariff import Tariff, TariffError

__all__ = ["IllegalTransition", "JobClock", "Ledger", "LedgerError", "Tariff", "TariffError"]
