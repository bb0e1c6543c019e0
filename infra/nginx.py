"""A private nginx for tests: Debian's package (installed with apt-get when missing, like infra/services.py does
for Redis), run in the foreground as one process on a free loopback port, with its own prefix, config, logs and
temp directories under a directory the caller owns (a pytest ``tmp_path``). Nothing global is touched."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from infra.services import SetupError, apt_install


def nginx_bin() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        apt_install("nginx-light")
        found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """``Nginx(tmp_path, http_body).start()``: ``http_body`` goes inside ``http { }``; ``{port}`` in it is replaced
    by the chosen port and ``{root}`` by a document root holding ``ok.txt``. ``stop()`` ends the process."""

    def __init__(self, workdir: Path, http_body: str) -> None:
        self.prefix = workdir / "nginx"
        self.port = free_port()
        self.root = self.prefix / "html"
        self.http_body = http_body
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> Nginx:
        exe = nginx_bin()
        for d in ("conf", "logs", "html", "tmp"):
            (self.prefix / d).mkdir(parents=True, exist_ok=True)
        (self.root / "ok.txt").write_text("ok\n")
        body = self.http_body.replace("{port}", str(self.port)).replace("{root}", str(self.root))
        conf = self.prefix / "conf" / "nginx.conf"
        conf.write_text(
            "daemon off;\nmaster_process off;\nworker_processes 1;\n"
            f"error_log {self.prefix}/logs/error.log warn;\npid {self.prefix}/logs/nginx.pid;\n"
            "events { worker_connections 512; }\n"
            "http {\n  access_log off;\n"
            + "".join(
                f"  {kind}_temp_path {self.prefix}/tmp/{kind};\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            + body
            + "\n}\n"
        )
        self.proc = subprocess.Popen(
            [exe, "-p", str(self.prefix), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise SetupError(f"nginx exited with {self.proc.returncode}: {err[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.02)
        self.stop()
        raise SetupError(f"nginx did not listen on 127.0.0.1:{self.port} within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
