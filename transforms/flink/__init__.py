"""PyFlink adapters: the Java routing steps (`java/`, built by java_steps.py: a line's tenant key
and event time), Tenant (parse and a tenant's whole path in one keyed operator), SnapshotWriter
and Governor functions; pushed metrics; the Kafka source and sink; the connector jars' pins and
the build step that fetches them."""
