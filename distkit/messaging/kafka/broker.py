"""``KafkaBroker``: the broker contract on a real Kafka cluster."""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from distkit.errors import BrokerUnavailableError, InvalidArgumentError, UnknownTopicError
from distkit.messaging.broker import check_consumer_args
from distkit.messaging.kafka.consumer import KafkaConsumer
from distkit.messaging.kafka.errors import translate
from distkit.messaging.kafka.producer import KafkaProducer, KafkaTransactionalProducer
from distkit.messaging.message import Codec, JsonCodec, check_topic_name


class KafkaBroker:
    """Kafka behind the :class:`~distkit.messaging.Broker` protocol.

    ``auto_create_topics=False`` makes sending to a topic that does not exist a clear
    :class:`~distkit.errors.UnknownTopicError` before anything is produced. ``timeout_s`` bounds every
    blocking call (metadata, ``init_transactions``, commit): an unreachable broker raises
    :class:`~distkit.errors.BrokerUnavailableError` instead of hanging. ``config`` is merged into every
    librdkafka client config (security settings, ``client.id`` ...).

    >>> broker = KafkaBroker(bootstrap="127.0.0.1:9092")          # doctest: +SKIP
    >>> with broker.transactional_producer("order-svc-1") as tx:   # doctest: +SKIP
    ...     tx.send("orders", {"order_id": 42}, key=b"42", headers={"event-id": "e-1"})
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        codec: Codec | None = None,
        config: dict[str, Any] | None = None,
        auto_create_topics: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        if not bootstrap:
            raise InvalidArgumentError("KafkaBroker needs a bootstrap server list, e.g. '127.0.0.1:9092'")
        self.bootstrap = bootstrap
        self.codec: Codec = codec or JsonCodec()
        self.auto_create_topics = auto_create_topics
        self.timeout_s = timeout_s
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
            **(config or {}),
        }
        self._admin: AdminClient | None = None
        self._known_topics: set[str] = set()
        self._producers: dict[str, KafkaTransactionalProducer] = {}
        self._initialising: dict[str, KafkaTransactionalProducer] = {}  # init_transactions timed out: resume it
        self._replaced: list[KafkaTransactionalProducer] = []  # older instances still usable: closed with the broker
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, **kwargs: Any) -> KafkaBroker:
        """A broker for ``DISTKIT_KAFKA_BOOTSTRAP``."""
        from distkit.config import ENV_KAFKA_BOOTSTRAP, Settings

        bootstrap = Settings.from_env().kafka_bootstrap
        if not bootstrap:
            raise InvalidArgumentError(f"{ENV_KAFKA_BOOTSTRAP} is not set")
        return cls(bootstrap, **kwargs)

    # -- admin -------------------------------------------------------------------------------------
    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(dict(self._config))
        return self._admin

    def _refresh_topics(self) -> set[str]:
        try:
            meta = self._admin_client().list_topics(timeout=self.timeout_s)
        except KafkaException as exc:
            raise BrokerUnavailableError(
                f"Kafka at {self.bootstrap} did not answer within {self.timeout_s} s; is the broker up?"
            ) from exc
        self._known_topics = set(meta.topics)
        return self._known_topics

    def ping(self) -> None:
        """Raise :class:`~distkit.errors.BrokerUnavailableError` unless the cluster answers metadata."""
        self._refresh_topics()

    def _check_topic(self, topic: str) -> None:
        if self.auto_create_topics or topic in self._known_topics:
            return
        if topic not in self._refresh_topics():
            raise UnknownTopicError(
                f"topic {topic!r} does not exist on {self.bootstrap} and auto_create_topics "
                "is off; create it first (broker.create_topic)"
            )

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 1) -> None:
        """Create ``name`` (no error if it already exists)."""
        check_topic_name(name)
        if partitions < 1:
            raise InvalidArgumentError(f"a topic needs at least one partition, got {partitions}")
        futures = self._admin_client().create_topics(
            [NewTopic(name, partitions, replication_factor)], operation_timeout=self.timeout_s
        )
        try:
            futures[name].result(timeout=self.timeout_s * 2)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise translate(exc, f"create topic {name}") from exc
        self._known_topics.add(name)

    # -- clients -----------------------------------------------------------------------------------
    def transactional_producer(self, transactional_id: str) -> KafkaTransactionalProducer:
        """The producer for ``transactional_id``, created (``init_transactions``) on first use."""
        if not transactional_id:
            raise InvalidArgumentError("transactional_id must be a non-empty string")
        with self._lock:
            producer = self._producers.get(transactional_id)
            if producer is None or not producer.usable:
                producer = self._make_producer(transactional_id)
            return producer

    def new_transactional_producer(self, transactional_id: str) -> KafkaTransactionalProducer:
        """A separate producer instance with this id (it fences any older one), as a restarted process has."""
        if not transactional_id:
            raise InvalidArgumentError("transactional_id must be a non-empty string")
        with self._lock:
            return self._make_producer(transactional_id)

    def _make_producer(self, transactional_id: str) -> KafkaTransactionalProducer:
        """A new initialised instance; one whose ``init_transactions`` timed out is resumed, not duplicated."""
        producer = self._initialising.pop(transactional_id, None)
        if producer is None or not producer.usable:
            self._refresh_topics()  # bounded reachability check before librdkafka's own waits
            producer = KafkaTransactionalProducer(
                dict(self._config), self.codec, self._check_topic, transactional_id, self.timeout_s, init=False
            )
        try:
            producer.init()
        except BrokerUnavailableError:
            if producer.usable:
                self._initialising[transactional_id] = producer
            raise
        old = self._producers.get(transactional_id)
        self._producers[transactional_id] = producer
        if old is not None and old is not producer:
            if old.usable:
                self._replaced.append(old)  # a zombie the caller may still hold (its commit will be fenced)
            else:
                old.close()  # broken or fenced: nothing to flush or abort; this stops its worker thread
        return producer

    def producer(self) -> KafkaProducer:
        self._refresh_topics()
        return KafkaProducer(dict(self._config), self.codec, self._check_topic)

    def consumer(
        self,
        group_id: str,
        topics: list[str],
        *,
        auto_offset_reset: str = "earliest",
        isolation_level: str = "read_committed",
    ) -> KafkaConsumer:
        check_consumer_args(group_id, topics, auto_offset_reset, isolation_level)
        known = self._refresh_topics()
        missing = [t for t in topics if t not in known]
        if missing and not self.auto_create_topics:
            raise UnknownTopicError(f"topics {missing} do not exist on {self.bootstrap} and auto_create_topics is off")
        for t in missing:
            self.create_topic(t)
        config = {
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            **self._config,  # the caller's config wins over these defaults
            "auto.offset.reset": auto_offset_reset,
            "isolation.level": isolation_level,
        }
        return KafkaConsumer(config, self.codec, group_id, list(topics), close_timeout_s=max(10.0, 3 * self.timeout_s))

    def close(self) -> None:
        with self._lock:
            for p in [*self._producers.values(), *self._replaced]:
                p.close()
            self._producers.clear()
            self._replaced.clear()
