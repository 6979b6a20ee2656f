import logging

from django.core.signals import request_finished

from cyberlab.deferred import run_after_response


def test_deferred_work_runs_after_the_request_and_one_failure_stops_nothing(caplog):
    # given two pieces of work handed over during a request, the first of which fails
    done = []

    def failing():
        raise RuntimeError("boom")

    run_after_response(failing)
    run_after_response(lambda: done.append("second"))
    assert done == []
    # when the response has been sent
    with caplog.at_level(logging.ERROR, logger="cyberlab.deferred"):
        request_finished.send(sender=None)
    # then the rest still ran, the failure was logged, and nothing runs twice
    assert done == ["second"]
    assert "failed" in caplog.text
    request_finished.send(sender=None)
    assert done == ["second"]
