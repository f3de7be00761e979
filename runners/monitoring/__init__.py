"""What an operator watches the job with: the Prometheus recording and alert rules
(`rules.yml`), the UPM-001 dashboard's panels as PromQL (`dashboard.py`, which also writes the
Grafana JSON and draws the panels from a live Prometheus), and a local Prometheus server
scraping the local Flink cluster (`local_prometheus.py`). docker/ mounts the same files."""
