"""PyFlink adapters: Parse, Tenant (a tenant's whole path in one keyed operator), SnapshotWriter
and Governor functions; pushed metrics; the Kafka source and sink; the build step that fetches
the pinned connector jars."""
