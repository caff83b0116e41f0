"""Runs gunicorn for ``maas serve``; started by path (``python -P
.../gunicorn_run.py [gunicorn options] APP``), so that the gunicorn master
never imports maas.

It is gunicorn's own command line with one change: gunicorn puts its working
folder (``--chdir``, by default the folder it was started in) *first* on
sys.path, so that a server started from a source checkout of maas imported
the checkout's ``maas/`` (which has no built ``_core``) instead of the
installed package. Here that folder goes *last*: the installed maas wins,
and a ``--loader`` module in the working folder still imports.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and sys.path[0] and os.path.abspath(sys.path[0]) == _HERE:
    del sys.path[0]  # the script's folder (maas/serving/), when started without -P

from gunicorn.app.wsgiapp import WSGIApplication  # noqa: E402


class _Application(WSGIApplication):
    def chdir(self):
        os.chdir(self.cfg.chdir)
        if self.cfg.chdir not in sys.path:
            sys.path.append(self.cfg.chdir)


if __name__ == "__main__":
    _Application("%(prog)s [OPTIONS] [APP_MODULE]", prog="gunicorn").run()
