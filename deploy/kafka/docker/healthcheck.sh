#!/bin/bash
# Healthy when the first listener accepts a connection (the broker opens it once it has caught
# up with the metadata quorum). No Kafka CLI tools ship in this image: the jars are the broker's.
set -eu
listener="${KAFKA_LISTENERS%%,*}"
port="${listener##*:}"
exec 3<>"/dev/tcp/127.0.0.1/${port}"
