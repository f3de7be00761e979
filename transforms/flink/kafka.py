"""Kafka in and out of the Flink job: KafkaSource for feature windows and feedback, KafkaSink
(transactional, exactly once with checkpoints) for the records.

The Flink Kafka connector is not in the PyFlink package. `make` fetches the pinned PyPI package
`shigawire-apache-flink-libraries==2.0.0.post1` (a redistribution of the Apache jars
flink-connector-kafka 4.0.1-2.0 and kafka-clients 3.9.1), extracts those two jars into
`<venv>/upm-jars/` and checks them against `kafka-jars.sha256` beside this file; they are checked
again here before use. `UPM_KAFKA_JARS` (paths separated by ':') points at your own jars instead
(not checked: they are yours).

PyFlink's wrappers expect the shaded connector in places: `committed_offsets(...)` fails with
these jars, so the offsets initializer is built through the Java gateway.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream.connectors.kafka import (DeliveryGuarantee, KafkaOffsetsInitializer,
                                                 KafkaRecordSerializationSchema, KafkaSink,
                                                 KafkaSource)

from transforms.flink.jar_pins import ConnectorJarError, pinned, verified

# The broker's transaction.max.timeout.ms defaults to 15 minutes; stay well inside it.
TRANSACTION_TIMEOUT_MS = 300_000


def connector_jars() -> list[Path]:
    """The connector jars to put on the job's class path, verified when they are ours."""
    own = os.environ.get("UPM_KAFKA_JARS")
    if own:
        jars = [Path(p) for p in own.split(":") if p]
        missing = [str(p) for p in jars if not p.is_file()]
        if missing:
            raise ConnectorJarError(f"UPM_KAFKA_JARS names missing files: {', '.join(missing)}")
        return jars
    base = Path(sys.prefix) / "upm-jars"
    return [verified(base / name, digest) for name, digest in pinned().items()]


def source(bootstrap: str, topics: list[str], group_id: str, bounded: bool) -> KafkaSource:
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    committed = jvm.org.apache.flink.connector.kafka.source.enumerator.initializer \
        .OffsetsInitializer.committedOffsets(
            jvm.org.apache.kafka.clients.consumer.OffsetResetStrategy.EARLIEST)
    builder = (KafkaSource.builder().set_bootstrap_servers(bootstrap).set_topics(*topics)
               .set_group_id(group_id)
               .set_starting_offsets(KafkaOffsetsInitializer(committed))
               .set_value_only_deserializer(SimpleStringSchema())
               .set_property("commit.offsets.on.checkpoint", "true")
               .set_property("partition.discovery.interval.ms", "10000"))
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    return builder.build()


def sink(bootstrap: str, topic: str, exactly_once: bool, transactional_prefix: str) -> KafkaSink:
    builder = (KafkaSink.builder().set_bootstrap_servers(bootstrap)
               .set_record_serializer(KafkaRecordSerializationSchema.builder().set_topic(topic)
                                      .set_value_serialization_schema(SimpleStringSchema())
                                      .build()))
    if exactly_once:
        builder = (builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
                   .set_transactional_id_prefix(transactional_prefix)
                   .set_property("transaction.timeout.ms", str(TRANSACTION_TIMEOUT_MS)))
    else:
        builder = builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    return builder.build()
