"""The Kafka connector jars' pins (`kafka-jars.sha256`: `<sha256>  <file name>` per line) and
their check. Standard library only: the build step (`fetch_jars`) uses it before PyFlink runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

SHA256_FILE = Path(__file__).with_name("kafka-jars.sha256")


class ConnectorJarError(RuntimeError):
    pass


def pinned(sha256_file: Path = SHA256_FILE) -> dict[str, str]:
    """File name -> sha256, or ConnectorJarError naming the line that is not a pin."""
    out = {}
    for n, line in enumerate(sha256_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or len(fields[0]) != 64 or any(
                c not in "0123456789abcdef" for c in fields[0]):
            raise ConnectorJarError(f"{sha256_file}:{n} is not `<sha256>  <jar name>`: {line!r}")
        out[fields[1]] = fields[0]
    return out


def verified(path: Path, digest: str) -> Path:
    """`path`, if it is there and hashes to `digest`; else ConnectorJarError saying which."""
    if not path.is_file():
        raise ConnectorJarError(f"{path} is missing: run `make flink-env` (it fetches the "
                                "pinned Kafka connector) or set UPM_KAFKA_JARS")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != digest:
        raise ConnectorJarError(f"{path} has sha256 {actual}, expected {digest} "
                                f"({SHA256_FILE.name}): refusing it")
    return path
