"""Broker launchers: Apache Kafka (KRaft, via Java) and Tansu (bundled binary), plus port helpers."""

from gridloop.brokers.kafka import (
    BrokerTls,
    KafkaCluster,
    SaslListeners,
    ensure_kafka_jars,
    java_available,
    kafka_available,
)
from gridloop.brokers.ports import free_port, free_ports, wait_for_kafka
from gridloop.brokers.tansu import TansuBroker, tansu_available, tansu_binary

__all__ = [
    "BrokerTls",
    "KafkaCluster",
    "SaslListeners",
    "TansuBroker",
    "ensure_kafka_jars",
    "free_port",
    "free_ports",
    "java_available",
    "kafka_available",
    "tansu_available",
    "tansu_binary",
    "wait_for_kafka",
]
