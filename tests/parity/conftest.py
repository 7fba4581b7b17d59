import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The parity kit. CI sets CHATTERBOX_PARITY_DIR and then a missing kit is a failure, not a skip."""
    explicit = os.environ.get("CHATTERBOX_PARITY_DIR")
    folder = Path(explicit) if explicit else ROOT.parent / "shared" / "parity"
    if not (folder / "tolerances.json").is_file():
        if explicit:
            pytest.fail(f"CHATTERBOX_PARITY_DIR={explicit} holds no parity kit")
        pytest.skip(f"no parity kit at {folder} (set CHATTERBOX_PARITY_DIR)")
    return folder
