"""`maas demo`, the README's first command: trains, saves into
./models/digits/1/, serves under gunicorn, asks once, prints the curl line."""
import os
import socket
import subprocess
import sys


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_maas_demo_trains_saves_serves_and_answers(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "maas", "demo", "--no-wait", "--port", str(free_port())],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert os.path.isfile(tmp_path / "models" / "digits" / "1" / "model.maas")
    assert "the server answered:" in out.stdout and '"model": "digits", "version": "1"' in out.stdout
    assert "curl -s http://127.0.0.1:" in out.stdout
    acc = float(out.stdout.split("test accuracy: ")[1].split()[0])
    assert acc > 0.95
