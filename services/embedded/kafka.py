"""Apache Kafka (KRaft, broker and controller in one JVM) from the jars `make kafka` resolves."""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import uuid
import xml.etree.ElementTree as ET  # noqa: N817
from pathlib import Path

from services.core.errors import EmbeddedStackError
from services.core.settings import LocalSettings

JAR_GLOB = "kafka_2.13-*.jar"
VERSION_FILE = "VERSION"

LOG4J2_YAML = """\
# Broker logs to stdout, which the stack appends to its log file; WARN keeps it readable.
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
"""


def render_server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    """A single-node KRaft configuration on loopback, tuned for a 2-core development machine.

    >>> props = render_server_properties(19092, 19093, Path("/d"))
    >>> "listeners=PLAINTEXT://127.0.0.1:19092," in props
    True
    """
    return "\n".join(
        [
            "# Written by `streamscore local up`: single node, broker and controller in one JVM.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data_dir}",
            # One node: every internal topic has one replica.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=6",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=6",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # Groups form at once instead of waiting 3 s for more members.
            "group.initial.rebalance.delay.ms=0",
            # Topics come from the topic table only; a typo must not create a topic.
            "auto.create.topics.enable=false",
            "num.network.threads=2",
            "num.io.threads=2",
            "log.retention.hours=168",
            "",
        ]
    )


def jars_version(jars_dir: Path) -> str | None:
    """The Kafka version whose jars are in ``jars_dir``, or None when they are not there."""
    version_file = jars_dir / VERSION_FILE
    if not version_file.is_file() or not any(jars_dir.glob(JAR_GLOB)):
        return None
    return version_file.read_text(encoding="utf-8").strip() or None


def java_path(local: LocalSettings) -> str | None:
    return shutil.which(local.java_bin)


def availability(local: LocalSettings) -> tuple[bool, str]:
    """Whether Apache Kafka can run here, and why not when it cannot."""
    if java_path(local) is None:
        return False, f"no Java found ({local.java_bin!r} is not on PATH)"
    if jars_version(local.kafka_jars_dir) is None:
        return False, f"no Kafka jars in {local.kafka_jars_dir} (run `make kafka`)"
    return True, f"Apache Kafka {jars_version(local.kafka_jars_dir)}"


def _java(local: LocalSettings) -> str:
    java = java_path(local)
    if java is None:
        raise EmbeddedStackError(f"no Java found ({local.java_bin!r} is not on PATH)")
    return java


def jvm_args(local: LocalSettings, log4j: Path, logs_dir: Path) -> list[str]:
    return [
        _java(local),
        f"-Xmx{local.kafka_heap}",
        "-Xms128m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={logs_dir}",
        "-cp",
        str(local.kafka_jars_dir / "*"),
    ]


def prepare(local: LocalSettings, work_dir: Path) -> list[str]:
    """Write the configuration, format KRaft storage once, and return the broker's argv.

    Raises:
        EmbeddedStackError: Java or the jars are missing, or formatting failed.
    """
    ok, why = availability(local)
    if not ok:
        raise EmbeddedStackError(why)
    data_dir = work_dir / "data"
    work_dir.mkdir(parents=True, exist_ok=True)
    props = work_dir / "server.properties"
    props.write_text(
        render_server_properties(local.kafka_port, local.kafka_controller_port, data_dir),
        encoding="utf-8",
    )
    log4j = work_dir / "log4j2.yaml"
    log4j.write_text(LOG4J2_YAML, encoding="utf-8")
    jvm = jvm_args(local, log4j, work_dir)
    if not (data_dir / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # "=" form: a random id may start with "-", which argparse would read as an option.
        cmd = [
            *jvm,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            f"--config={props}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # noqa: S603
        if done.returncode != 0:
            raise EmbeddedStackError(
                f"kafka storage format failed ({done.returncode}): {done.stdout[-800:]}"
                f"{done.stderr[-800:]}"
            )
    return [*jvm, "kafka.Kafka", str(props)]


def fetch_jars(pom: Path, dest: Path, mvn: str = "mvn") -> str:
    """Resolve Kafka's broker jars with Maven into ``dest`` (replaced atomically).

    Returns:
        The Kafka version now in ``dest``.

    Raises:
        EmbeddedStackError: Maven is missing or resolution failed (its output is included).
    """
    mvn_path = shutil.which(mvn)
    if mvn_path is None:
        raise EmbeddedStackError(f"Maven ({mvn!r}) is not on PATH")
    version = _pom_kafka_version(pom)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".kafka-jars-") as tmp:
        out = Path(tmp) / "jars"
        cmd = [
            mvn_path,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={out}",
            "-DincludeScope=runtime",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)  # noqa: S603
        if done.returncode != 0 or not any(out.glob(JAR_GLOB)):
            errors = [ln for ln in done.stdout.splitlines() if "ERROR" in ln][:5]
            raise EmbeddedStackError(
                "maven could not resolve Apache Kafka's jars: "
                + (" | ".join(errors) or done.stderr[-800:] or f"exit {done.returncode}")
            )
        (out / VERSION_FILE).write_text(version + "\n", encoding="utf-8")
        old = dest.with_name(dest.name + ".old")
        if dest.exists():
            dest.rename(old)
        out.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    return version


def _pom_kafka_version(pom: Path) -> str:

    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    try:
        root = ET.parse(pom).getroot()  # noqa: S314 (our own committed pom, not input)
    except (OSError, ET.ParseError) as exc:
        raise EmbeddedStackError(f"cannot read {pom}: {exc}") from exc
    node = root.find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:
        raise EmbeddedStackError(f"{pom} has no <kafka.version> property")
    return node.text.strip()
