"""gunicorn settings for ``maas serve``. Loaded by gunicorn as a file (not
as maas.serving.gunicorn_conf) so that the master never imports maas."""
import os

preload_app = False  # models and thread pools are made in each worker, after fork
accesslog = None     # maas writes its own audit log


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
# gunicorn >= 27 opens a control socket at a fixed path in $HOME, which two
# servers on one machine would fight over; maas does not use it
control_socket_disable = True
