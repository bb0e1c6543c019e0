"""Kafka implementation of the broker contract (confluent-kafka / librdkafka)."""

from distkit.messaging.kafka.broker import KafkaBroker
from distkit.messaging.kafka.consumer import KafkaConsumer
from distkit.messaging.kafka.producer import KafkaProducer, KafkaTransactionalProducer

__all__ = ["KafkaBroker", "KafkaConsumer", "KafkaProducer", "KafkaTransactionalProducer"]
