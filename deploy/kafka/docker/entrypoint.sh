#!/bin/bash
# Writes server.properties from KAFKA_* variables (the apache/kafka image's convention:
# KAFKA_LOG_DIRS -> log.dirs; "__" keeps an underscore, "___" is a dash), formats the KRaft
# storage with CLUSTER_ID on first start, then runs the broker in the foreground (PID 1, so
# SIGTERM reaches it and it shuts down cleanly).
set -euo pipefail
props=/opt/kafka/config/server.properties
: "${CLUSTER_ID:?set CLUSTER_ID (the same on every node of the cluster)}"
: "${KAFKA_LOG_DIRS:=/var/lib/kafka/data}"
export KAFKA_LOG_DIRS
{
  echo "# Written by entrypoint.sh from the KAFKA_* environment."
  for name in $(compgen -e | grep '^KAFKA_' | sort); do
    case "$name" in KAFKA_HEAP_OPTS|KAFKA_JVM_OPTS) continue ;; esac
    key="${name#KAFKA_}"
    key="${key//___/-}"
    key="${key//__/@}"
    key="${key//_/.}"
    key="${key//@/_}"
    echo "${key,,}=${!name}"
  done
} > "$props"
cat > /opt/kafka/config/log4j2.yaml <<'YAML'
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
YAML
# shellcheck disable=SC2206 # word splitting of the option strings is intended
jvm=(java ${KAFKA_HEAP_OPTS} -XX:+UseG1GC -Djava.awt.headless=true ${KAFKA_JVM_OPTS:-}
     -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.yaml -cp "/opt/kafka/libs/*")
if [ ! -f "$KAFKA_LOG_DIRS/meta.properties" ]; then
  "${jvm[@]}" kafka.tools.StorageTool format "--cluster-id=$CLUSTER_ID" "--config=$props"
fi
exec "${jvm[@]}" kafka.Kafka "$props"
