"""What every locally started server shares: detached launch with a pid file, a bounded readiness wait that
stops early when the process dies, stop by pid, the tail of its log, and fetching jars with Maven."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil


class PartError(RuntimeError):
    """A server could not be fetched, started or stopped. ``summary`` is one line saying why (which server, which
    address, what it said); ``details`` holds the last lines of its log."""

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(f"{summary}\n{details}" if details else summary)
        self.summary = summary
        self.details = details


def launch(command: list[str], *, cwd: Path, log_file: Path, env: Mapping[str, str] | None = None) -> int:
    """Start ``command`` in the background in its own session, owned by init (a shell starts it and exits), with
    stdout/stderr appended to ``log_file`` (created private: some servers log secrets at start); its pid."""
    log_file.touch(mode=0o600)
    result = subprocess.run(
        ["/bin/sh", "-c", '"$@" >>"$0" 2>&1 </dev/null & echo $!', str(log_file), *command],
        cwd=cwd, env=dict(env) if env is not None else None, capture_output=True, text=True, start_new_session=True,
    )
    if result.returncode != 0 or not result.stdout.strip().isdigit():
        raise PartError(f"launching {command[0]} failed: {(result.stderr or result.stdout).strip()}")
    return int(result.stdout.strip())


EMPTY_CMDLINE_RETRIES = 20  # x 50 ms


def alive_process(pid_file: Path, marker: str) -> psutil.Process | None:
    """The live process whose pid ``pid_file`` holds (first line) and whose command line contains ``marker``.

    A process in the middle of ``execve`` (just launched) shows an empty command line for a moment: that is
    read again, not taken for "not running" (a readiness wait once gave up on a starting S3Proxy that way).
    """
    try:
        pid = int(pid_file.read_text().split()[0])
        process = psutil.Process(pid)
        for _ in range(EMPTY_CMDLINE_RETRIES):
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            cmdline = " ".join(process.cmdline())
            if cmdline:
                break
            time.sleep(0.05)
    except (FileNotFoundError, IndexError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return process if marker in cmdline else None



def stop_process(process: psutil.Process | None, *, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> bool:
    """Send ``sig``, SIGKILL after ``timeout_s``; True if a process was running."""
    if process is None:
        return False
    try:
        process.send_signal(sig)
        if not wait_gone(process, timeout_s):
            process.kill()
            wait_gone(process, 10.0)
    except psutil.NoSuchProcess:
        pass
    return True


def wait_gone(process: psutil.Process, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def wait_ready(probe: Callable[[], bool], *, what: str, timeout_s: float, alive: Callable[[], bool], log_file: Path) -> None:
    """Poll ``probe`` until True; ``PartError`` with the log's last lines if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise PartError(f"{what} exited before answering: {last_error_line(log_file)}", tail(log_file))
        try:
            if probe():
                return
        except Exception:  # not answering yet: connection refused, reset, 5xx ...
            pass
        time.sleep(0.3)
    raise PartError(f"{what} did not answer within {timeout_s:.0f}s: {last_error_line(log_file)}", tail(log_file))


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"(no log at {path})"
    return f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def last_error_line(path: Path) -> str:
    """The last line of a log that reads like a cause (exception, ERROR, FATAL), else its last line."""
    if not path.exists():
        return f"no log at {path}"
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if any(word in line for word in ("Exception", "ERROR", "FATAL", "Error:", "error:")) and not line.startswith("at "):
            return line[:300]
    return lines[-1][:300] if lines else f"{path} is empty"


def free_ports(count: int) -> list[int]:
    """Loopback ports the OS has just handed out (held together, so they are distinct)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require_free_port(what: str, host: str, port: int) -> None:
    if port_in_use(host, port):
        raise PartError(f"{what}: port {port} on {host} is already in use by another process; pick another port")


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise PartError("java is not on PATH: install a JDK/JRE 17+ (S3Proxy and the Iceberg REST server are Java)")
    return java


def fetch_with_maven(pom: Path, libs: Path, marker_glob: str, *, force: bool = False) -> Path:
    """``mvn dependency:copy-dependencies`` of ``pom`` into ``libs`` unless a jar matching ``marker_glob`` is there.

    Downloads into a sibling folder and swaps it in, so an interrupted fetch never looks complete.
    """
    if not force and libs.is_dir() and any(libs.glob(marker_glob)):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PartError(f"mvn is not on PATH: install Maven to fetch {pom.name} into {libs}")
    partial = libs.with_name(libs.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={partial}", "-DincludeScope=runtime"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not any(partial.glob(marker_glob)):
        shutil.rmtree(partial, ignore_errors=True)
        output = (result.stdout + result.stderr).strip().splitlines()
        reason = next((line for line in reversed(output) if "ERROR" in line), output[-1] if output else "no output")
        raise PartError(f"fetching jars with mvn -f {pom} failed (exit {result.returncode}): {reason}", "\n".join(output[-20:]))
    shutil.rmtree(libs, ignore_errors=True)
    libs.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(libs)
    return libs
