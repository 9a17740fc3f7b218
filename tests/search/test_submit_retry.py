"""Submitting to a head node whose job agent is still starting waits for it."""

from __future__ import annotations

from typing import Any

import pytest

from morphsearch.search import submit


class _Client:
    def __init__(self, failures: int, message: str) -> None:
        self.failures, self.message, self.calls = failures, message, 0

    def submit_job(self, **job: Any) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(self.message)
        return "raysubmit_1"


def test_a_starting_agent_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit.time, "sleep", lambda s: None)
    starting = ("Request failed with status code 500: No available agent to submit job, "
                "please try again later..")
    client = _Client(2, starting)
    assert submit.submit_job(client, entrypoint="x") == "raysubmit_1"
    assert client.calls == 3


def test_other_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit.time, "sleep", lambda s: None)
    client = _Client(1, "Request failed with status code 400: bad runtime_env")
    with pytest.raises(RuntimeError, match="bad runtime_env"):
        submit.submit_job(client, entrypoint="x")
    assert client.calls == 1
