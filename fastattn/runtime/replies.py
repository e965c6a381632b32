"""Workers in other processes (a provider's environment, Node for onnxruntime-web) answer with one JSON line
``{"ok": ..., ...}`` as the last such line of their stdout; anything else is their failure, said in one line."""

from __future__ import annotations

import json
import subprocess


def read_reply(run: subprocess.CompletedProcess, who: str) -> dict:
    """The worker's reply, or ``{"ok": False, "error": ...}`` naming ``who`` and its last stderr line."""
    for line in reversed(run.stdout.strip().splitlines()):
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(reply, dict) and "ok" in reply:
            return reply
    last = (run.stderr.strip().splitlines() or [f"exit code {run.returncode}, no output"])[-1]
    return {"ok": False, "error": f"{who} failed: {last}", "exit_code": 1}
