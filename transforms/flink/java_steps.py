"""The job's Java steps (transforms/flink/java/upm/*.java): the tenant key and the event time of
a raw line, read in the JVM so that a line costs one Python call (DESIGN §6). The logic of a
message stays in Python; these only route it, and the keyed operator refuses what they read
differently (state/reasons.py `read_differently`).

    python -m transforms.flink.java_steps      # compile the jar (make flink-env does)

The jar is compiled with the JDK's `javac` against PyFlink's own jars into `<venv>/upm-jars/`,
named by the sha256 of its sources: an edited step is compiled anew, never run stale.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCES = Path(__file__).with_name("java")


def steps_jar() -> Path:
    """The compiled steps, built first if this version of the sources has no jar yet."""
    digest = hashlib.sha256()
    for source in _sources():
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    jar = Path(sys.prefix) / "upm-jars" / f"upm-flink-steps-{digest.hexdigest()[:16]}.jar"
    if jar.is_file():
        return jar
    jar.parent.mkdir(parents=True, exist_ok=True)
    with open(jar.parent / ".upm-flink-steps.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build when tests start several jobs at once
        if not jar.is_file():
            _build(jar)
    return jar


def _sources() -> list[Path]:
    return sorted(SOURCES.rglob("*.java"))


def _build(jar: Path) -> None:
    import pyflink

    javac = shutil.which("javac") or (os.path.join(os.environ["JAVA_HOME"], "bin", "javac")
                                      if os.environ.get("JAVA_HOME") else None)
    if not javac or not os.path.exists(javac):
        raise SystemExit("javac (a JDK 11+) is needed to build the job's Java steps; "
                         "install one, or set JAVA_HOME")
    lib = Path(pyflink.__file__).parent / "lib"
    classpath = os.pathsep.join(str(p) for p in lib.glob("*.jar"))
    with tempfile.TemporaryDirectory() as tmp:
        classes = Path(tmp) / "classes"
        subprocess.run([javac, "-nowarn", "--release", "11", "-cp", classpath, "-d", str(classes),
                        *map(str, _sources())], check=True)
        part = Path(tmp) / jar.name
        jar_tool = str(Path(javac).with_name("jar"))
        subprocess.run([jar_tool, "cf", str(part), "-C", str(classes), "."], check=True)
        shutil.move(part, jar.parent / f".{jar.name}.part")
        os.replace(jar.parent / f".{jar.name}.part", jar)


def line_fields(jvm):
    """A `upm.LineFields` with the rules of state/reasons.py."""
    from state.reasons import DEFAULT_TENANT, MAX_TIME_MS, MIN_TIME_MS, UNREAD_TENANT_KEY
    return jvm.upm.LineFields(DEFAULT_TENANT, UNREAD_TENANT_KEY, MIN_TIME_MS, MAX_TIME_MS)


if __name__ == "__main__":
    print(f"built {steps_jar()}")
