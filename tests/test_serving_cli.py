"""The ``serve`` and ``drift`` commands: argument parsing, settings from the environment, and a real server
process (uvicorn on a free loopback port) that answers, then stops cleanly on SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from serving.cli import add_commands
from serving.config import ServeConfig

from .conftest import REPO
from .serving_fixtures import serving_files


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="bertapprox")
    add_commands(root.add_subparsers(dest="command", required=True))
    return root


def test_serve_and_drift_parse_into_their_handlers():
    args = parser().parse_args(["serve", "--model", "m", "--index", "i", "--port", "9001", "--shadow-rate", "0.05"])
    assert callable(args.handler) and args.model == "m" and args.index == "i"
    assert (
        args.port == 9001 and args.shadow_rate == 0.05 and args.max_queued_requests == ServeConfig().max_queued_requests
    )
    args = parser().parse_args(["drift", "--model", "m", "--teacher", "t", "--queries", "q.jsonl", "--out", "o"])
    assert callable(args.handler) and (args.model, args.teacher, args.queries, args.out) == ("m", "t", "q.jsonl", "o")


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("BERTAPPROX_SERVE_MODEL", "from-env")
    monkeypatch.setenv("BERTAPPROX_SERVE_MAX_QUEUED_REQUESTS", "7")
    monkeypatch.setenv("BERTAPPROX_SERVE_MIN_COSINE", "0.5")
    args = parser().parse_args(["serve"])  # --model is not required when the environment names it
    assert (args.model, args.max_queued_requests, args.min_cosine) == ("from-env", 7, 0.5)
    config = ServeConfig.from_env()
    assert (config.model, config.max_queued_requests, config.min_cosine, config.index) == ("from-env", 7, 0.5, None)
    monkeypatch.setenv("BERTAPPROX_SERVE_PORT", "eighty")
    with pytest.raises(ValueError, match="BERTAPPROX_SERVE_PORT"):
        ServeConfig.from_env()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="teacher"):
        ServeConfig(model="m", shadow_rate=0.1).check()
    with pytest.raises(ValueError, match="max_queued_requests"):
        ServeConfig(model="m", max_queued_requests=0).check()
    with pytest.raises(ValueError, match="no model"):
        ServeConfig().check()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_real_server_process_answers_and_stops_on_sigterm(tmp_path_factory):
    pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    files = serving_files(tmp_path_factory)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "BERTAPPROX_SERVE_PORT": str(port)}
    command = [sys.executable, "-m", "serving", "serve", "--model", files.student, "--index", files.index]
    server = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as answer:
                    assert json.loads(answer.read())["status"] == "ready"
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the server did not start in 60 s"
                time.sleep(0.3)
        request = urllib.request.Request(
            base + "/embed",
            data=json.dumps({"inputs": ["new york"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert len(json.loads(answer.read())[0]) == 32
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0]
    assert server.returncode == 0, output
    assert "Finished server process" in output
