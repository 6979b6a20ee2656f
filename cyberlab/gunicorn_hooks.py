"""Server hooks for scripts/serve.sh (`gunicorn -c python:cyberlab.gunicorn_hooks`)."""


def child_exit(server, worker) -> None:
    # A gone worker's live gauges (open event streams) leave the sum at /metrics.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
