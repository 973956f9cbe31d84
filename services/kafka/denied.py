"""A refusal by the cluster's authorizer, as one line naming who, what and on which resource.

librdkafka reports a missing ACL as an error code (``TOPIC_AUTHORIZATION_FAILED`` ...) inside
a message, a delivery report or an exception; these helpers turn any of those into
``NotAuthorized`` so that a missing grant stops a command or a worker with a line a person can
act on, instead of a traceback or a retry loop that cannot succeed.
"""

from __future__ import annotations

from services.core.errors import NotAuthorized
from services.core.settings import Settings

# librdkafka's error names for a refusal, and the kind of resource each one is about.
REFUSALS = {
    "TOPIC_AUTHORIZATION_FAILED": "topic",
    "GROUP_AUTHORIZATION_FAILED": "group",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED": "transactional id",
    "CLUSTER_AUTHORIZATION_FAILED": "cluster",
}
# A wrong user or password: librdkafka's _AUTHENTICATION, the broker's SASL code.
AUTHENTICATION = ("SASL_AUTHENTICATION_FAILED", "_AUTHENTICATION", "Authentication failed")


def refusal(text: str) -> str | None:
    """The refusal code named in ``text`` (an error's string), else None.

    >>> refusal('KafkaError{code=TOPIC_AUTHORIZATION_FAILED,val=29,str="Broker: ..."}')
    'TOPIC_AUTHORIZATION_FAILED'
    >>> refusal("Broker: Topic authorization failed")
    'TOPIC_AUTHORIZATION_FAILED'
    >>> refusal("Local: Message timed out") is None
    True
    """
    for code in REFUSALS:
        if code in text or code.replace("_", " ").lower() in text.lower():
            return code
    if any(a in text for a in AUTHENTICATION):
        return "SASL_AUTHENTICATION_FAILED"
    return None


def who(settings: Settings) -> str:
    """The principal this process connects as."""
    return settings.kafka.sasl_username or f"this client ({settings.kafka.security_protocol})"


def not_authorized(
    settings: Settings, text: str, operation: str, resource: str | None
) -> NotAuthorized | None:
    """``NotAuthorized`` for an error whose string is ``text``, or None when it is no refusal.

    Args:
        operation: what was tried, as Kafka names it: Read, Write, Describe, Create.
        resource: the topic, group or transactional id it was tried on, when known.

    >>> s = Settings(kafka={"sasl_username": "streamscore-worker"})
    >>> str(not_authorized(s, "Broker: Topic authorization failed", "Write", "p.labels.v1"))
    'streamscore-worker is not allowed to Write topic p.labels.v1 (TOPIC_AUTHORIZATION_FAILED)'
    """
    code = refusal(text)
    if code is None:
        return None
    if code == "SASL_AUTHENTICATION_FAILED":
        return NotAuthorized(
            f"{who(settings)} could not authenticate to {settings.kafka_bootstrap} with "
            f"{settings.kafka.sasl_mechanism or 'SASL'} (SASL_AUTHENTICATION_FAILED): check its "
            "user name and password"
        )
    kind = REFUSALS[code]
    target = kind if kind == "cluster" else f"{kind} {resource or '(not named by the broker)'}"
    return NotAuthorized(f"{who(settings)} is not allowed to {operation} {target} ({code})")


def from_error(
    settings: Settings, text: str, stage: str | None, topic: str | None
) -> NotAuthorized | None:
    """A refusal found inside another error (a command's ``BrokerUnavailable``, a worker's
    ``PublishError``), with the operation told from where it happened.

    >>> s = Settings(kafka={"sasl_username": "streamscore-api"})
    >>> str(from_error(s, "1 outputs were not delivered, first: Broker: Topic authorization "
    ...     "failed", "publish", "t.v1"))
    'streamscore-api is not allowed to Write topic t.v1 (TOPIC_AUTHORIZATION_FAILED)'
    """
    code = refusal(text)
    if code is None:
        return None
    writes = stage == "publish" or code == "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
    resource = None if code == "GROUP_AUTHORIZATION_FAILED" else topic
    return not_authorized(settings, text, "Write" if writes else "Read", resource)
