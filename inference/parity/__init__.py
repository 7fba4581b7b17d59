"""Numerical parity with the reference implementation, checked on the kit's golden files."""
import os

# MKL chooses FFT kernels by CPU; the goldens follow its generic path, and log-mel bins near silence
# amplify the last-bit difference of the AVX-512 kernels past the 1e-4 tolerance. Effective only if
# no FFT ran in this process before.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

from .runner import CaseResult, run_file  # noqa: E402

__all__ = ["CaseResult", "run_file"]
