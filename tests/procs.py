"""Real server processes for tests: started in their own session on 127.0.0.1, stopped by PID with SIGTERM."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """Run `cmd` from the repo root with `env` over ours, output to `log`, in a new session."""
    env = {**os.environ, **env, "BENTOML_DO_NOT_TRACK": "True"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # a served app makes its own; test_service sets one in-process
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    """Poll `url` until it answers 200; fail with the log's tail if the process dies or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:4]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"no answer from {url} after {seconds:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group holds only its workers
            proc.wait(timeout=10)
