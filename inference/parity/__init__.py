"""Numerical parity with the reference implementation, checked on the kit's golden files."""
from .runner import CaseResult, run_file

__all__ = ["CaseResult", "run_file"]
