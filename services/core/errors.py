"""The streamscore exception tree; every error a stream worker can see is one of these.

::

    StreamMLError
    ├── ConfigError               startup only -> exit 2
    │   └── NotAuthorized         the cluster refused the principal an operation (ACL) -> exit 2
    │   ├── CredentialsRefused    ... or its CA or password (TLS, SASL) -> exit 2
    │   └── RedisRefused          Redis refused the user (WRONGPASS) or a command (NOPERM)
    ├── NotFound                  a named thing does not exist -> exit 3
    ├── PermanentError            bad data: never retried
    │   ├── DecodeError -> KeyDecodeError, ValueDecodeError
    │   │   └── UnknownSchemaIdError
    │   ├── ValidationError
    │   └── MissingFeaturesError
    ├── TransientError            infrastructure: retried with backoff
    │   ├── FeatureStoreUnavailable   the dependency gate retries, then degrades or holds
    │   ├── SchemaRegistryUnavailable the dependency gate retries, then holds
    │   ├── RegistryUnavailable       MLflow: the last good model keeps serving
    │   ├── BrokerUnavailable         one-shot commands: one line naming the broker, exit 1
    │   └── PublishError              the worker stops without committing past the output
    ├── ModelLoadError            a model version cannot be served (worker keeps the last good one)
    │   └── ModelIntegrityError   its artifact's sha256 does not match the registry
    └── EmbeddedStackError        the local stack could not start, answer or stop

On the hot path a bad message is not an exception but a value: the stages return
``Rejected(stage, reason, detail)`` (``services.core.outcomes``), which becomes a dead letter.
The ``PermanentError`` classes name the same failures for callers outside the batch path.

Adapters wrap third-party errors (``raise FeatureStoreUnavailable(...) from exc``) so that no
``redis.*`` or ``confluent_kafka.*`` exception reaches stream code. Each error carries the
coordinates of the message it concerns, when there is one, and prints as one line.
"""

from __future__ import annotations


class StreamMLError(Exception):
    """Base of every streamscore error.

    Args:
        message: what went wrong, one line.
        topic, partition, offset: where the offending message sits, when there is one.
        stage: the pipeline stage that raised (``decode``, ``validate``, ``enrich``, ...).

    >>> str(StreamMLError("boom", topic="t", partition=1, offset=7, stage="decode"))
    'boom [stage=decode topic=t partition=1 offset=7]'
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        stage: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.stage = stage

    def __str__(self) -> str:
        where = {
            "stage": self.stage,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
        }
        parts = [f"{k}={v}" for k, v in where.items() if v is not None]
        text = self.message.replace("\n", " ")
        return f"{text} [{' '.join(parts)}]" if parts else text


class ConfigError(StreamMLError):
    """Invalid or inconsistent configuration, detected at startup (CLI exit code 2)."""


class NotAuthorized(ConfigError):
    """The cluster refused this principal an operation (an ACL is missing) or its credentials:
    no retry helps, a person must grant it (exit 2). Prints as one line naming the principal,
    the operation and the resource, never a secret."""


class CredentialsRefused(NotAuthorized):
    """The cluster refused this process's CA or password (failed TLS handshakes or SASL
    logins, ``services.kafka.auth``): one line naming the principal, the brokers and the cause
    (exit 2)."""


class RedisRefused(NotAuthorized):
    """Redis refused this process's user: a wrong password or a disabled user (WRONGPASS), or
    an ACL that does not grant a command or key pattern it uses (NOPERM). Not an outage: no
    retry helps until a person fixes the user or the grant, so the dependency gate's policy
    (pause, degrade) does not apply. One line naming the user, the command and the keys, never
    the password; the worker stops with it after ``redis.auth_failure_seconds`` (exit 2), the
    API answers 500, a command exits 2.

    Args:
        command: what was refused (``MGET``, ``EVALSHA``, ...): a bounded metric label.
        cause: ``wrongpass`` or ``noperm``.
    """

    def __init__(self, message: str, *, command: str, cause: str) -> None:
        super().__init__(message)
        self.command = command
        self.cause = cause


class NotFound(StreamMLError):
    """What a command was asked to show does not exist (the CLI exits 3)."""


class PermanentError(StreamMLError):
    """Bad data: retrying cannot help, so the message goes to the dead-letter topic."""


class DecodeError(PermanentError):
    """Bytes that are not a valid message in the Confluent Avro wire format."""


class KeyDecodeError(DecodeError):
    """The message key could not be decoded."""


class ValueDecodeError(DecodeError):
    """The message value could not be decoded."""


class UnknownSchemaIdError(ValueDecodeError):
    """The wire header names a schema id that neither the registry nor the manifest knows."""


class ValidationError(PermanentError):
    """A decoded record breaks a semantic rule (range, length, enum, time window)."""


class MissingFeaturesError(PermanentError):
    """Features required for scoring are absent and have no declared default."""


class TransientError(StreamMLError):
    """Infrastructure trouble: retry with backoff, then crash without committing."""


class FeatureStoreUnavailable(TransientError):
    """The online feature store (Redis) did not answer."""


class BrokerUnavailable(TransientError):
    """The Kafka cluster did not answer in time."""


class SchemaRegistryUnavailable(TransientError):
    """The Confluent Schema Registry did not answer in time."""


class RegistryUnavailable(TransientError):
    """The model registry (MLflow) or its artifact store did not answer: workers keep serving
    what they serve, and start from their local copies."""


class PublishError(TransientError):
    """A produced message was not acknowledged by the broker."""


class ModelLoadError(StreamMLError):
    """A model version could not be fetched, verified or loaded."""


class ModelIntegrityError(ModelLoadError):
    """A model artifact's sha256 differs from the one recorded at registration: refused."""


class EmbeddedStackError(StreamMLError):
    """The embedded local stack (broker, Redis) could not be started, reached or stopped."""
