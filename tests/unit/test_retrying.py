"""The one retry loop: tries, pauses (doubling, capped, or as the service asked), giving up."""

import pytest

from miniwdl_omnibio.retrying import pause_before, retry


class Flaky:
    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_retries_with_doubling_pauses_then_succeeds():
    slept = []
    flaky = Flaky([ValueError("busy")] * 3)
    assert retry(flaky, lambda exn: True, tries=5, sleep=slept.append) == "ok"
    assert flaky.calls == 4 and slept == [1.0, 2.0, 4.0]


def test_the_services_retry_after_wins_and_is_capped():
    slept = []
    flaky = Flaky([ValueError("429"), ValueError("429")])
    retry(flaky, lambda exn: 120.0 if len(slept) else 3.0, tries=5, sleep=slept.append, cap=30)
    assert slept == [3.0, 30.0]
    assert pause_before(10, None) == 30.0


def test_gives_up_at_once_on_a_failure_not_worth_another_try():
    flaky = Flaky([KeyError("denied")])
    with pytest.raises(KeyError):
        retry(flaky, lambda exn: False, tries=5, sleep=lambda s: None)
    assert flaky.calls == 1


def test_the_last_failure_is_raised_when_tries_run_out():
    flaky = Flaky([ValueError(str(i)) for i in range(9)])
    with pytest.raises(ValueError, match="2"):
        retry(flaky, lambda exn: True, tries=3, sleep=lambda s: None)
    assert flaky.calls == 3
