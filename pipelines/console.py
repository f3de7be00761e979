"""Keep a job's console to UPM Stream's own lines: TensorFlow's C++ log (on a machine without
a GPU it reports the failed CUDA probe as an error) and the FutureWarnings two Google client
libraries print when they are imported are silenced, in this process and, through the
environment, in the processes it starts (the embedded Flink cluster's Python, Beam workers).
`UPM_DEBUG=1` shows everything. UPM's own warnings and every exception still show."""

from __future__ import annotations

import builtins
import os
import re
import warnings

# (category, the module that calls warnings.warn): google-api-core on Python 3.11's end of
# support, google-auth on grpcio without post-quantum TLS. Neither is something a user of
# UPM Stream can act on; the pins in constraints/ decide both.
THIRD_PARTY_WARNINGS = (
    ("FutureWarning", "google.api_core._python_version_support"),
    ("FutureWarning", "google.auth.transport.grpc"),
)


def quiet_console(env=os.environ) -> None:
    """Call first thing in an entry point, before TensorFlow or a Google client is imported."""
    if env.get("UPM_DEBUG") == "1":
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for category, module in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", category=getattr(builtins, category),
                                module=re.escape(module))
    inherited = [w for w in env.get("PYTHONWARNINGS", "").split(",") if w]
    ours = [f"ignore::{category}:{module}" for category, module in THIRD_PARTY_WARNINGS]
    env["PYTHONWARNINGS"] = ",".join(inherited + [w for w in ours if w not in inherited])
