"""The local Apache Kafka broker (KRaft, single node) that feeds the raw topics, and the admin calls on it.

``start`` fetches the broker jars with Maven on first use, formats storage once, launches the JVM detached
with a pid file, and waits until it answers metadata; ``stop`` ends it. With ``sasl_users`` the client
listener is SASL_PLAINTEXT (SCRAM-SHA-512 and PLAIN); the SCRAM users are created by Kafka's own
``StorageTool format --add-scram``. ``create_topics`` and ``high_watermarks`` work against any cluster
(local or remote): pass a bootstrap string or a full client config (``schemas.kafka_config``).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from schemas.kafka_positions import KafkaPositions, KafkaPositionsError
from schemas.settings import REPO_ROOT
from stream_workers.parts.process import wait_gone

KAFKA_POM = REPO_ROOT / "deploy" / "kafka-pom.xml"
LOG4J2_CONFIG = REPO_ROOT / "deploy" / "kafka-log4j2.properties"
DEFAULT_HOME = REPO_ROOT / ".cache" / "kafka"
# The jar that holds kafka.Kafka; its presence means the libs were fetched completely.
_BROKER_JAR_GLOB = "kafka_2.13-*.jar"
SCRAM_MECHANISM = "SCRAM-SHA-512"
# A cluster to talk to: "host:port" (plaintext) or a librdkafka config (bootstrap + security).
KafkaTarget = str | Mapping[str, object]


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started, stopped or queried.

    ``summary`` is one line saying why; ``details`` (tool output, log tail) follows it in ``str()``.
    """

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(f"{summary}\n{details}" if details else summary)
        self.summary = summary
        self.details = details


@dataclass(frozen=True)
class BrokerConfig:
    """Where a local broker listens and keeps its files.

    ``home`` holds the shared ``libs/`` and, by default, one ``data-<port>/`` folder per broker with its
    ``server.properties``, pid file, ``server.log`` and the KRaft log dirs. ``data_dir`` overrides the
    latter (tests use a temporary folder). ``sasl_users`` ((name, password), ...) turns the client
    listener into SASL_PLAINTEXT with SCRAM-SHA-512 and PLAIN; the first user is the broker's own
    (inter-broker) identity. Users are written when storage is formatted (first start of a data dir).
    """

    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 0  # 0 means port + 1
    home: Path = DEFAULT_HOME
    data_dir: Path | None = None
    heap: str = "512m"
    default_partitions: int = 6
    sasl_users: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.controller_port == 0:
            object.__setattr__(self, "controller_port", self.port + 1)
        if self.controller_port == self.port:
            raise ValueError(f"controller port must differ from the broker port {self.port}")
        for name, password in self.sasl_users:
            # StorageTool's --add-scram syntax and the JAAS line cannot carry these characters.
            if not name or not password or any(c in name + password for c in ',[]="\\ '):
                raise ValueError(f"SASL user {name!r}: name and password must be non-empty, without , [ ] = \" \\ or spaces")

    @property
    def security_protocol(self) -> str:
        return "SASL_PLAINTEXT" if self.sasl_users else "PLAINTEXT"

    def client_config(self) -> dict[str, object]:
        """librdkafka config for this broker, authenticated as the first SASL user when SASL is on."""
        config: dict[str, object] = {"bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol}
        if self.sasl_users:
            name, password = self.sasl_users[0]
            config.update({"sasl.mechanism": SCRAM_MECHANISM, "sasl.username": name, "sasl.password": password})
        return config

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def libs_dir(self) -> Path:
        return self.home / "libs"

    @property
    def data_path(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.home / f"data-{self.port}"

    @property
    def log_dirs(self) -> Path:
        """Kafka's own ``log.dirs`` (partition segments and the KRaft metadata log)."""
        return self.data_path / "kraft"

    @property
    def properties_file(self) -> Path:
        return self.data_path / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.data_path / "broker.pid"

    @property
    def log_file(self) -> Path:
        """The broker's log4j2 output (see ``deploy/kafka-log4j2.properties``)."""
        return self.data_path / "server.log"

    @property
    def console_file(self) -> Path:
        """The JVM's stdout/stderr: crashes before log4j2 is up end here."""
        return self.data_path / "console.log"


@dataclass(frozen=True)
class BrokerStatus:
    """What ``status`` saw: ``running`` means the bootstrap answered metadata."""

    running: bool
    pid: int | None
    bootstrap: str
    topics: tuple[str, ...] = ()


def parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    """``"127.0.0.1:9092,other:9092"`` -> ``("127.0.0.1", 9092)``."""
    first = bootstrap.split(",")[0].strip()
    first = re.sub(r"^[A-Z_]+://", "", first)
    host, sep, port = first.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"bootstrap server must look like host:port, got {bootstrap!r}")
    return host, int(port)


def fetch_jars(config: BrokerConfig | None = None, *, force: bool = False) -> Path:
    """Download the Kafka broker jars into ``config.libs_dir`` with Maven, unless they are already there."""
    config = config or BrokerConfig()
    libs = config.libs_dir
    if not force and _jars_present(libs):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(f"mvn is not on PATH: install Maven to fetch the Kafka jars into {libs}")
    _require_java()
    # Download into a sibling folder and swap it in, so an interrupted fetch never looks complete.
    partial = libs.with_name(libs.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        mvn, "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}", "-DincludeScope=runtime",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not _jars_present(partial):
        shutil.rmtree(partial, ignore_errors=True)
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise BrokerError(f"fetching Kafka jars with mvn -f {KAFKA_POM} failed (exit {result.returncode})", "\n".join(output))
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    return libs


def start(config: BrokerConfig | None = None, wait_s: float = 60.0) -> BrokerStatus:
    """Start the broker (fetching jars and formatting storage on first use) and wait until it answers.

    Already running under this config: returns its status. Raises ``BrokerError`` with the tail of the
    broker's log if it exits or does not answer within ``wait_s``.
    """
    config = config or BrokerConfig()
    if _broker_process(config) is not None:
        try:
            wait_ready(config.client_config(), wait_s)
        except TimeoutError as exc:
            raise BrokerError(f"Kafka broker on {config.bootstrap} runs but does not answer; see {config.log_file}", log_tail(config)) from exc
        return status(config)
    for port in (config.port, config.controller_port):
        if _port_in_use(config.host, port):
            raise BrokerError(f"port {port} on {config.host} is already in use by another process; pick another --port")

    java = _prepare(config)
    pid = _launch_detached([*_java_command(config, java), "kafka.Kafka", str(config.properties_file)], config)
    config.pid_file.write_text(f"{pid}\n")

    try:
        wait_ready(config.client_config(), wait_s, alive=lambda: _broker_process(config) is not None)
    except TimeoutError as exc:
        exited = _broker_process(config) is None
        stop(config)
        state = "exited" if exited else f"did not answer within {wait_s:.0f}s"
        cause = _last_exception_line(config)
        state += f" ({cause})" if cause else ""
        raise BrokerError(f"Kafka broker on {config.bootstrap} {state}; see {config.log_file}", log_tail(config)) from exc
    return status(config)


def _prepare(config: BrokerConfig) -> str:
    """Jars fetched, server.properties written, storage formatted on first use; returns the java binary."""
    fetch_jars(config)
    java = _require_java()
    config.data_path.mkdir(parents=True, exist_ok=True)
    config.properties_file.touch(mode=0o600)  # it carries the SASL passwords when SASL is on
    config.properties_file.chmod(0o600)
    config.properties_file.write_text(server_properties(config))
    if not (config.log_dirs / "meta.properties").exists():
        _format_storage(config, java)
    return java


def run_foreground(config: BrokerConfig | None = None) -> None:
    """Replace this process with the broker (for process managers such as honcho: ``ticklake broker run``)."""
    config = config or BrokerConfig()
    if _broker_process(config) is not None:
        raise BrokerError(f"a Kafka broker from {config.data_path} is already running; stop it first")
    java = _prepare(config)
    os.chdir(config.data_path)
    config.pid_file.write_text(f"{os.getpid()}\n")  # exec keeps the pid, so `broker status|stop` still work
    os.execv(java, [java, *_java_command(config, java)[1:], "kafka.Kafka", str(config.properties_file)])


def stop(config: BrokerConfig | None = None, timeout_s: float = 30.0) -> bool:
    """SIGTERM the broker, SIGKILL it after ``timeout_s``; True if one was running. Stale pid files are removed."""
    config = config or BrokerConfig()
    process = _broker_process(config)
    if process is None:
        config.pid_file.unlink(missing_ok=True)
        return False
    try:
        process.send_signal(signal.SIGTERM)
        if not wait_gone(process, timeout_s):
            process.kill()
            if not wait_gone(process, 10.0):
                raise BrokerError(f"Kafka broker pid {process.pid} on {config.bootstrap} survived SIGKILL")
    except psutil.NoSuchProcess:
        pass
    config.pid_file.unlink(missing_ok=True)
    return True


def status(config: BrokerConfig | None = None, timeout_s: float = 2.0) -> BrokerStatus:
    """Pid of the broker started under this config (if alive) and the topics its bootstrap serves."""
    config = config or BrokerConfig()
    process = _broker_process(config)
    pid = process.pid if process is not None else None
    if not _port_in_use(config.host, config.port):  # answers "not running" at once, not after the timeout
        return BrokerStatus(running=False, pid=pid, bootstrap=config.bootstrap)
    try:
        metadata = _admin(config.client_config()).list_topics(timeout=timeout_s)
    except KafkaException:
        return BrokerStatus(running=False, pid=pid, bootstrap=config.bootstrap)
    topics = tuple(sorted(t for t in metadata.topics if not t.startswith("__")))
    return BrokerStatus(running=True, pid=pid, bootstrap=config.bootstrap, topics=topics)


def wait_ready(target: KafkaTarget, timeout: float = 60.0, alive: Callable[[], bool] | None = None) -> None:
    """Block until the cluster answers a metadata request; ``TimeoutError`` naming its address otherwise.

    ``alive`` (optional) is polled between attempts; once it returns False waiting stops early.
    """
    admin = _admin(target)
    bootstrap = _bootstrap_of(target)
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if alive is not None and not alive():
            raise TimeoutError(f"Kafka broker process for {bootstrap} exited before answering")
        try:
            if admin.list_topics(timeout=min(2.0, remaining)).brokers:
                return
        except KafkaException as exc:
            last_error = str(exc)  # a string: keeping the exception would pin this frame (and the client)
        time.sleep(0.2)
    raise TimeoutError(f"Kafka at {bootstrap} did not answer metadata within {timeout:.0f}s ({last_error})")


def create_topics(
    target: KafkaTarget,
    topics: Iterable[str],
    partitions: int = 6,
    replication: int = 1,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet and wait until they have leaders; returns those created.

    Existing topics are left as they are (whatever their partition count).
    """
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        return []
    admin = _admin(target)
    bootstrap = _bootstrap_of(target)
    _list_topics(admin, bootstrap, min(timeout_s, 10.0))  # fail fast, with a clear message, if unreachable
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=replication) for t in wanted],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created: list[str] = []
    for topic in wanted:
        try:
            futures[topic].result()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise BrokerError(f"creating topic {topic!r} on {bootstrap} failed: {error.str()}") from exc
        created.append(topic)
    _wait_for_leaders(admin, target, created, timeout_s)
    return created


def high_watermarks(target: KafkaTarget, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """``{partition: high watermark}`` of ``topic`` (the offset the next produced message gets).

    Read through ``schemas.kafka_positions`` (retries leader/epoch changes for up to ``timeout_s``).
    """
    try:
        return _positions(target, timeout_s).high_watermarks([topic])[topic]
    except KafkaPositionsError as exc:
        raise BrokerError(str(exc)) from None


def delete_data(config: BrokerConfig) -> None:
    """Remove the broker's data folder (topics, logs, properties). Refuses while the broker runs."""
    if _broker_process(config) is not None:
        raise BrokerError(f"the broker on {config.bootstrap} is running; stop it before deleting {config.data_path}")
    shutil.rmtree(config.data_path, ignore_errors=True)


def server_properties(config: BrokerConfig) -> str:
    """The ``server.properties`` of a single-node KRaft broker+controller on localhost listeners.

    The client listener is PLAINTEXT, or SASL_PLAINTEXT (SCRAM-SHA-512 + PLAIN) with ``sasl_users``; the
    controller listener stays PLAINTEXT on loopback (only this node talks to it).
    """
    h, p, c = config.host, config.port, config.controller_port
    name = config.security_protocol
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers={h}:{c}",
        f"listeners={name}://{h}:{p},CONTROLLER://{h}:{c}",
        f"advertised.listeners={name}://{h}:{p}",
        "controller.listener.names=CONTROLLER",
        f"listener.security.protocol.map={name}:{name},CONTROLLER:PLAINTEXT",
        f"inter.broker.listener.name={name}",
        *_sasl_properties(config),
        f"log.dirs={config.log_dirs}",
        f"num.partitions={config.default_partitions}",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
    ]
    return "# Written by stream_workers.broker on every start; edit BrokerConfig instead.\n" + "\n".join(lines) + "\n"


def _sasl_properties(config: BrokerConfig) -> list[str]:
    """SCRAM-SHA-512 and PLAIN on the SASL listener: SCRAM users live in the cluster metadata (written at
    format time), PLAIN users in the JAAS line (that is where Kafka's PLAIN server module reads them)."""
    if not config.sasl_users:
        return []
    admin, admin_password = config.sasl_users[0]
    plain_users = " ".join(f'user_{n}="{pw}"' for n, pw in config.sasl_users)
    prefix = "listener.name.sasl_plaintext"
    return [
        f"sasl.enabled.mechanisms={SCRAM_MECHANISM},PLAIN",
        f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
        f"{prefix}.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{admin}" password="{admin_password}";',
        f"{prefix}.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{admin}" password="{admin_password}" {plain_users};',
    ]


def log_tail(config: BrokerConfig, lines: int = 30) -> str:
    """The last lines of the broker's log4j2 log and of its JVM console output."""
    parts = []
    for path in (config.log_file, config.console_file):
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                parts.append(f"--- {path}\n" + "\n".join(tail))
    return "\n".join(parts) or f"(no log written in {config.data_path})"


# --- internals -------------------------------------------------------------------------------------------


def _jars_present(libs: Path) -> bool:
    return libs.is_dir() and any(libs.glob(_BROKER_JAR_GLOB))


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java is not on PATH: install a JDK/JRE 17+ to run the Kafka broker")
    return java


def _java_command(config: BrokerConfig, java: str) -> list[str]:
    return [
        java,
        f"-Xmx{config.heap}",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        f"-Dkafka.logs.dir={config.data_path}",
        "-cp",
        f"{config.libs_dir}/*",
    ]


def _launch_detached(command: list[str], config: BrokerConfig) -> int:
    """Run ``command`` in the background, in its own session, owned by init rather than by us; its pid.

    A shell starts it and exits at once, so the broker is never our child: it outlives the CLI that
    started it, never lingers as our zombie, and Python never warns about a still-running subprocess.
    Its stdout/stderr go to ``config.console_file``.
    """
    launcher = '"$@" >>"$0" 2>&1 </dev/null & echo $!'
    result = subprocess.run(
        ["/bin/sh", "-c", launcher, str(config.console_file), *command],
        cwd=config.data_path,
        capture_output=True,
        text=True,
        start_new_session=True,
    )
    if result.returncode != 0 or not result.stdout.strip().isdigit():
        raise BrokerError(f"launching the Kafka broker failed: {(result.stderr or result.stdout).strip()}")
    return int(result.stdout.strip())


def new_cluster_id(draw: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64, never starting with "-" (1 in 64 does, and
    StorageTool then reads it as an option: "argument --cluster-id/-t: expected one argument")."""
    while True:
        cluster_id = base64.urlsafe_b64encode(draw()).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(config: BrokerConfig, java: str) -> None:
    cluster_id = new_cluster_id()
    command = [
        *_java_command(config, java),
        "kafka.tools.StorageTool", "format",
        "-t", cluster_id, "-c", str(config.properties_file), "--standalone",
    ]
    for name, password in config.sasl_users:
        command += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=config.data_path)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        for _, password in config.sasl_users:
            output = output.replace(password, "***")
        raise BrokerError(
            f"formatting Kafka storage in {config.log_dirs} failed (exit {result.returncode}): {_reason(output)}",
            "\n".join(output.splitlines()[-20:]),
        )


def _reason(output: str) -> str:
    """The line of a JVM tool's output that says why it failed: the last exception or error line, else the
    last line that is not a stack frame."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line) or line.lower().startswith("error"):
            return line
    frames = [line for line in lines if not line.startswith("at ") and not line.startswith("...")]
    return frames[-1] if frames else "no output"


def _broker_process(config: BrokerConfig) -> psutil.Process | None:
    """The live broker process recorded in the pid file, or None (no file, dead, zombie or a reused pid)."""
    try:
        pid = int(config.pid_file.read_text().strip())
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = process.cmdline()
    except (FileNotFoundError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if "kafka.Kafka" in cmdline and str(config.properties_file) in cmdline:
        return process
    return None


def _last_exception_line(config: BrokerConfig) -> str | None:
    """The last ``SomeException: message`` line the JVM logged, e.g. why the broker refused to start."""
    found = None
    for path in (config.log_file, config.console_file):
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if _EXCEPTION_LINE.match(line):
                    found = line.strip()
    return found


_EXCEPTION_LINE = re.compile(r"^(Caused by: )?[a-z][\w.$]*\.[A-Z]\w*(Exception|Error)\b")


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _admin(target: KafkaTarget) -> AdminClient:
    # librdkafka would print every failed reconnect (several per second while a broker is down or
    # starting); every call here has a timeout and raises with context instead.
    config: dict[str, Any] = {"bootstrap.servers": target} if isinstance(target, str) else dict(target)  # librdkafka values
    return AdminClient({**config, "log_level": 2})


def _bootstrap_of(target: KafkaTarget) -> str:
    return target if isinstance(target, str) else str(target["bootstrap.servers"])


def _positions(target: KafkaTarget, wait_s: float) -> KafkaPositions:
    """A ``KafkaPositions`` reader for ``target``, authenticated when the target carries security settings
    (its errors name only the bootstrap address, never credentials)."""
    config = None if isinstance(target, str) else dict(target)
    return KafkaPositions(_bootstrap_of(target), wait_s=wait_s, client_config=config)


def _list_topics(admin: AdminClient, bootstrap: str, timeout_s: float) -> ClusterMetadata:
    try:
        return admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerError(f"Kafka at {bootstrap} did not answer metadata within {timeout_s:.0f}s: {exc}") from exc


def _wait_for_leaders(admin: AdminClient, target: KafkaTarget, topics: list[str], timeout_s: float) -> None:
    """New topics are usable once every partition is listed with a leader and that leader serves offsets."""
    bootstrap = _bootstrap_of(target)
    deadline = time.monotonic() + timeout_s
    pending = list(topics)
    while pending:
        metadata = _list_topics(admin, bootstrap, timeout_s)
        pending = [
            t for t in pending
            if t not in metadata.topics
            or metadata.topics[t].error is not None
            or any(p.leader < 0 for p in metadata.topics[t].partitions.values())
        ]
        if not pending:
            break
        if time.monotonic() > deadline:
            raise BrokerError(f"topics {pending} on {bootstrap} have no leader after {timeout_s:.0f}s")
        time.sleep(0.1)
    # A fresh topic's metadata names a leader a moment before that broker serves the partition.
    try:
        _positions(target, max(1.0, deadline - time.monotonic())).high_watermarks(topics)
    except KafkaPositionsError as exc:
        raise BrokerError(str(exc)) from None
