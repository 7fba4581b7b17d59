import os

# MKL picks FFT kernels by CPU (AVX-512 here); the goldens were produced on MKL's generic path.
# Log-mel bins near silence amplify that last-bit difference past the kit's 1e-4 tolerance, so
# tests pin MKL's reproducible mode. It must be set before the first FFT of the process.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
