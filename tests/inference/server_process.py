"""`python -m inference.server` as users start it, for the tests that need a server process of its own (a log
file to read, a process to measure or to send SIGTERM to)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from inference.settings import PROJECT_ROOT

MAX_TOKENS = 16  # per sentence: the tiny preset rarely stops by itself


def launch(log: Path, *flags: str, env: dict | None = None, model: str = "tiny",
           max_tokens: int = MAX_TOKENS) -> tuple[str, subprocess.Popen]:
    """`python -m inference.server` with the test settings, started but not yet ready (see `wait_ready`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "inference.server", "--model", model, "--port", str(port),
                                 "--max-new-tokens", str(max_tokens), "--chunk-size", "16", "--max-chars", "400",
                                 "--prompt-tokens", "4", *flags],  # 4 voice-prompt tokens per chunk: S3Gen several times cheaper
                                cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    return f"http://127.0.0.1:{port}", proc


def wait_ready(url: str, proc: subprocess.Popen, log: Path, headers: dict) -> None:
    deadline = time.time() + 300
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2, headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
