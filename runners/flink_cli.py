"""`upm flink up|down|status`, `upm submit`, `upm jobs`, `upm cancel`, `upm stop --savepoint`,
`upm resume --from-savepoint`: the job on a standalone Flink cluster on this machine."""

from __future__ import annotations

import dataclasses
import sys
import time

from runners import flink_cluster as fc
from runners.errors import UserError
from runners.job_flags import STATE_BACKENDS, add_job_arguments, job_options


def _spec(args) -> fc.ClusterSpec:
    return fc.ClusterSpec(store=args.store, rest_port=args.rest_port,
                          rpc_port=getattr(args, "rpc_port", 6123),
                          slots=getattr(args, "slots", 1),
                          taskmanagers=getattr(args, "taskmanagers", 1),
                          prometheus_ports=getattr(args, "metrics_ports", None)
                          or fc.ClusterSpec.prometheus_ports,
                          state_backend=getattr(args, "cluster_state_backend", None)
                          or fc.ClusterSpec.state_backend)


def _prometheus_spec(args, spec: fc.ClusterSpec):
    from runners.monitoring.local_prometheus import PrometheusSpec
    return PrometheusSpec(store=args.store, port=args.prometheus_port,
                          flink_ports=spec.prometheus_ports, extra_targets=tuple(args.scrape),
                          scrape_interval=args.scrape_interval)


def cmd_flink(args) -> int:
    spec = _spec(args)
    if args.action == "up":
        ov = fc.up(spec)
        print(f"Flink {ov.get('flink-version')} up: web UI {spec.rest}/  "
              f"{ov['taskmanagers']} TaskManager(s), {ov['slots-total']} slots; "
              f"config {spec.dir / 'conf' / 'config.yaml'}")
        if args.prometheus:
            from runners.monitoring import local_prometheus as lp
            try:
                url = lp.up(_prometheus_spec(args, spec))
            except lp.PrometheusError as e:
                raise UserError(str(e), exit_code=1) from None
            print(f"Prometheus up: {url}/alerts  scraping {spec.prometheus_ports}"
                  + "".join(f", {t}" for t in args.scrape))
    elif args.action == "down":
        from runners.monitoring import local_prometheus as lp
        lp.down(_prometheus_spec(args, spec))
        fc.down(spec)
        print("Flink cluster stopped")
    else:
        ov = fc.overview(spec)
        if not ov:
            print(f"no Flink cluster answers on {spec.rest}")
            return 1
        print(f"Flink {ov.get('flink-version')} at {spec.rest}/: {ov['taskmanagers']} "
              f"TaskManager(s), {ov['slots-available']}/{ov['slots-total']} slots free, "
              f"{ov['jobs-running']} running job(s)")
    return 0


def cmd_submit(args) -> int:
    from pipelines.flink_job import submit

    args.output = args.store
    opts, _ = job_options(args, fresh_records=False)
    opts = dataclasses.replace(opts, rest_port=args.rest_port, rest_host=args.rest_host,
                               job_name=args.name,
                               savepoint_path=getattr(args, "from_savepoint", None),
                               checkpoint_interval_ms=args.checkpoint_interval_ms)
    if opts.uses_kafka:  # what is wrong here first, then what is wrong over there
        from transforms.flink.kafka import connector_jars
        connector_jars()
    spec = dataclasses.replace(_spec(args), jobmanager_host=args.rest_host)
    if not fc.overview(spec, timeout=10):
        raise UserError(f"no Flink cluster answers on {spec.rest}/ (start one with `upm flink "
                        "up`, or give its --rest-host and --rest-port)", exit_code=1)
    job_id = submit(opts)
    print(f"submitted job {job_id}  web UI "
          f"http://{args.rest_host}:{args.rest_port}/#/job/running/{job_id}")
    return 0


def cmd_jobs(args) -> int:
    spec = _spec(args)
    for j in fc.rest(spec, "/jobs/overview")["jobs"]:
        print(f"{j['jid']}  {j['state']:<10} {j['name']}  started "
              f"{time.strftime('%H:%M:%S', time.localtime(j['start-time'] / 1000))}")
    return 0


def cmd_cancel(args) -> int:
    fc.rest(_spec(args), f"/jobs/{args.job_id}", method="PATCH")
    print(f"cancelling {args.job_id}")
    return 0


def stop_with_savepoint(spec: fc.ClusterSpec, job_id: str, directory: str | None,
                        timeout_s: float = 300, drain: bool = False) -> str:
    """Stop the job with a savepoint; its location. `drain`: first advance event time to the
    end (Flink's MAX_WATERMARK), so every tenant does what a bounded input's end does (held
    windows trained, drift judged, stats emitted) before the savepoint. A job whose tasks are
    not all running yet (a TaskManager still starting its Python) is asked again until they
    are, or until `timeout_s`."""
    body = {"drain": drain, "formatType": "CANONICAL"}
    if directory:
        body["targetDirectory"] = directory
    deadline = time.time() + timeout_s
    while True:
        trigger = fc.rest(spec, f"/jobs/{job_id}/stop", method="POST", body=body)["request-id"]
        outcome = _savepoint_outcome(spec, job_id, trigger, deadline)
        if isinstance(outcome, str):
            return outcome  # the location
        if NOT_ALL_RUNNING not in str(outcome) or time.time() > deadline:
            raise RuntimeError(f"stop with savepoint failed: {outcome}")
        time.sleep(1)


NOT_ALL_RUNNING = "Not all required tasks are currently running"


def _savepoint_outcome(spec: fc.ClusterSpec, job_id: str, trigger: str, deadline: float):
    """The savepoint's location (str), or its failure cause (dict)."""
    while time.time() < deadline:
        st = fc.rest(spec, f"/jobs/{job_id}/savepoints/{trigger}")
        if st["status"]["id"] == "COMPLETED":
            op = st["operation"]
            return op["failure-cause"] if "failure-cause" in op else op["location"]
        time.sleep(0.5)
    raise RuntimeError("stop with savepoint did not complete in time")


def cmd_stop(args) -> int:
    if not args.savepoint:
        print("upm stop: use --savepoint (or `upm cancel` to stop without one)", file=sys.stderr)
        return 2
    location = stop_with_savepoint(_spec(args), args.job_id, args.savepoint_dir,
                                   drain=args.drain)
    print(f"stopped {args.job_id}; savepoint {location}")
    return 0


def add_commands(sub) -> None:
    def cluster(p):
        p.add_argument("--store", default="./upm-data", help="store root (default ./upm-data)")
        p.add_argument("--rest-port", type=int, default=8081)
        return p

    f = cluster(sub.add_parser("flink", help="a standalone Flink cluster on 127.0.0.1"))
    f.add_argument("action", choices=("up", "down", "status"))
    f.add_argument("--rpc-port", type=int, default=6123)
    f.add_argument("--slots", type=int, default=1,
                   help="slots per TaskManager (default 1: in thread mode the slots of one "
                   "TaskManager share its Python interpreter, so cores come from --taskmanagers)")
    f.add_argument("--taskmanagers", type=int, default=1)
    f.add_argument("--state-backend", dest="cluster_state_backend", choices=STATE_BACKENDS,
                   default="rocksdb", help="the jobs' default state backend: rocksdb (default; "
                   "local disk, incremental checkpoints) or hashmap (the JVM heap); a job's own "
                   "--state-backend wins")
    f.add_argument("--metrics-ports", default=fc.ClusterSpec.prometheus_ports, metavar="LO-HI",
                   help="the port range of the JobManager's and TaskManagers' Prometheus "
                   "reporters, one port each (default %(default)s)")
    f.add_argument("--prometheus", action="store_true",
                   help="up: also start a Prometheus server (127.0.0.1) scraping the cluster, "
                   "with UPM Stream's recording and alert rules")
    f.add_argument("--prometheus-port", type=int, default=9090)
    f.add_argument("--scrape", action="append", default=[], metavar="HOST:PORT",
                   help="another target for that Prometheus (e.g. `upm adapter --metrics-port`)")
    f.add_argument("--scrape-interval", default="15s")
    f.set_defaults(func=cmd_flink)

    for name, helptext in (("submit", "submit the streaming job to the cluster (detached)"),
                           ("resume", "submit the job restoring a savepoint")):
        s = cluster(sub.add_parser(name, help=helptext))
        add_job_arguments(s)
        s.add_argument("--name", default="upm-stream")
        s.add_argument("--rest-host", default="127.0.0.1", help="the JobManager's host")
        s.add_argument("--checkpoint-interval-ms", type=int, default=5000)
        if name == "resume":
            s.add_argument("--from-savepoint", required=True)
        s.set_defaults(func=cmd_submit)

    j = cluster(sub.add_parser("jobs", help="list the cluster's jobs"))
    j.set_defaults(func=cmd_jobs)
    c = cluster(sub.add_parser("cancel", help="cancel a job"))
    c.add_argument("job_id")
    c.set_defaults(func=cmd_cancel)
    st = cluster(sub.add_parser("stop", help="stop a job with a savepoint"))
    st.add_argument("job_id")
    st.add_argument("--savepoint", action="store_true")
    st.add_argument("--savepoint-dir")
    st.add_argument("--drain", action="store_true",
                    help="end event time first: every tenant finishes as at the end of a bounded "
                    "input (for a job that will not be resumed)")
    st.set_defaults(func=cmd_stop)
