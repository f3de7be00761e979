"""PyFlink adapters: Parse, Tenant (a tenant's whole path in one keyed operator), SnapshotWriter
and Governor functions; pushed metrics; the Kafka source and sink; the connector jars' pins and
the build step that fetches them."""
