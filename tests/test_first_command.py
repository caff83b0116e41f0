"""The newcomer's first command, as a newcomer runs it: ``git clone`` of this
repository (its committed HEAD: uncommitted edits are not in the clone), a
new virtual environment, and the README's first command pasted as it stands
(``pip install ".[serve]" scikit-learn``, a regular, non-editable install),
with ``maas demo`` given ``--no-wait`` and a free port so that it trains,
saves, serves, asks once, prints and stops.

This is the one slow test of the suite (an extension build and installs into
a fresh venv); it runs in the normal suite, once. It exists because the
command broke on a fresh clone while CI (an editable install) stayed green:
``maas demo`` started ``python -m maas serve`` in the checkout, whose
``maas/`` (no built ``_core``) shadowed the installed package.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _readme_first_command() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    m = re.search(r"## Install and run the main job\s+```bash\n(.+?)\n```", readme, re.S)
    assert m, "README.md has no '## Install and run the main job' bash block"
    return m.group(1).strip()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.mark.slow
def test_readme_first_command_on_a_fresh_clone(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    command = _readme_first_command()
    assert command.endswith("maas demo"), f"the README's first command changed: {command!r}"
    assert "-e " not in command, "the first command is meant to be a regular (non-editable) install"
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    clone = tmp_path / "maas"
    subprocess.run(["git", "clone", "-q", ROOT, str(clone)], check=True, timeout=300)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", head], check=True, timeout=60)
    assert not list((clone / "maas").glob("_core*")), "the clone holds a built extension"

    port = _free_port()
    run = command + f" --no-wait --port {port}"
    # a newcomer's shell: this interpreter's python3 first on PATH, no PYTHONPATH
    # pointing at a developer's checkout, no virtual environment active
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSAFEPATH")}
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    log = open(tmp_path / "first-command.log", "w+")
    proc = subprocess.Popen(["bash", "-c", run], cwd=clone, env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        rc = proc.wait(timeout=2400)
        log.seek(0)
        out = log.read()
        assert rc == 0, f"the first command failed ({rc}):\n{out[-6000:]}"
        # every process the command started has stopped (server, workers)
        deadline = time.monotonic() + 30
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(proc.pid), "processes of the demo are still running"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()

    assert "Error while finding module specification" not in out
    # the installed package, not the checkout, ran: the venv's site-packages
    venv_py = clone / ".venv" / "bin" / "python"
    where = subprocess.run([str(venv_py), "-c", "import maas; print(maas.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert "site-packages" in where, where

    m = re.search(r"label (\d+)\); the server answered:\n(\{.*\})", out)
    assert m, out[-3000:]
    label, answer = int(m.group(1)), json.loads(m.group(2))
    assert answer["model"] == "digits" and answer["version"] == "1"
    path = clone / "models" / "digits" / "1" / "model.maas"
    assert path.is_file()

    # the served class is the saved model's own prediction for that digit
    import maas
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    _, x_test, _, y_test = train_test_split(x, d.target, test_size=0.2, random_state=0,
                                            stratify=d.target)
    assert label == int(y_test[0])
    local = maas.load_model(str(path)).predict(x_test[:1], verbose=0)
    assert answer["classes"] == [int(np.argmax(local[0]))]
    acc = float(out.split("test accuracy: ")[1].split()[0])
    assert acc > 0.9


# ---- the parts of the fix, fast: no install, this checkout's maas

SHADOW_INIT = "raise ImportError('the shadowing maas/ of a source checkout was imported')\n"


@pytest.fixture
def checkout(tmp_path):
    """A folder that looks like a source checkout whose maas/ would shadow
    the real package if a child put the working folder first on sys.path."""
    (tmp_path / "maas").mkdir()
    (tmp_path / "maas" / "__init__.py").write_text(SHADOW_INIT)
    (tmp_path / "maas" / "__main__.py").write_text("print('SHADOW')\n")
    return tmp_path


@pytest.mark.parametrize("how", ["child_argv", "py310_shim"])
def test_a_child_started_in_a_checkout_imports_the_real_maas(checkout, how):
    from maas import cli

    argv = cli.child_argv("maas", "verify", "no-such-file.maas") if how == "child_argv" else \
        [sys.executable, "-c", cli._RUN_MODULE_SAFE, "maas", "verify", "no-such-file.maas"]
    out = subprocess.run(argv, cwd=checkout, env=cli.child_env(), capture_output=True, text=True,
                         timeout=120)
    assert "shadowing" not in out.stderr and "SHADOW" not in out.stdout
    assert out.returncode == 1 and "maas verify: error:" in out.stderr, out.stderr
    # plain `python -m maas` there is the trap this guards against
    trap = subprocess.run([sys.executable, "-m", "maas", "verify", "x"], cwd=checkout,
                          env=cli.child_env(), capture_output=True, text=True, timeout=120)
    assert "SHADOW" in trap.stdout or "shadowing" in trap.stderr


def test_maas_serve_under_gunicorn_in_a_checkout_serves_the_real_maas(checkout, tmp_path):
    pytest.importorskip("gunicorn")
    import requests

    import maas
    from maas import cli

    model = maas.Sequential([maas.Input((3,)), maas.layers.Dense(2)])
    repo = tmp_path / "models"
    maas.saving.save_to_repository(model, str(repo), "tiny")
    port = _free_port()
    env = cli.child_env(dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom")))
    proc = subprocess.Popen(cli.child_argv("maas", "serve", "models", "--port", str(port),
                                           "--workers", "1", "--audit-log", "off"),
                            cwd=checkout, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        answer = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = requests.post(f"http://127.0.0.1:{port}/models/tiny/predict",
                                  json={"instances": [[1.0, 2.0, 3.0]]}, timeout=2)
                if r.status_code == 200:
                    answer = r.json()
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        assert answer is not None, proc.stdout.read() if proc.poll() is not None else "not ready"
        expected = model.predict(np.array([[1.0, 2.0, 3.0]], np.float32), verbose=0)
        np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-6)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


def test_importing_a_source_tree_without_core_says_what_to_do(tmp_path):
    root = tmp_path / "checkout"
    shutil.copytree(os.path.join(ROOT, "maas"), root / "maas",
                    ignore=shutil.ignore_patterns("_core*", "__pycache__"))
    (root / "csrc").mkdir()
    shutil.copy(os.path.join(ROOT, "setup.py"), root / "setup.py")
    from maas._source_tree import source_tree_error

    err = source_tree_error(str(root / "maas" / "__init__.py"))
    assert isinstance(err, ImportError) and "pip install ." in str(err)
    assert source_tree_error(maas_init := os.path.join(ROOT, "maas", "__init__.py")) is None, maas_init
    # the real import: -S keeps site-packages (and an editable install's finder) out,
    # so the checkout's maas/ is all there is, as in a fresh clone
    out = subprocess.run([sys.executable, "-S", "-c", "import maas"], cwd=root,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "you are importing maas from its source tree" in out.stderr
    assert "pip install ." in out.stderr and "run Python from another folder" in out.stderr
