"""`make dev`: the Dagster UI and daemon (`dagster dev`) on the demo library.

Sets the embedded defaults (``CITYWOK_HOME``, ``DAGSTER_HOME=$CITYWOK_HOME/dagster``, the media
root ``$CITYWOK_HOME/demo-media`` unless ``CITYWOK_MEDIA_ROOT`` says otherwise), generates the
demo library when it is missing, then replaces itself with ``dagster dev``. SIGINT and
SIGTERM are reset to their defaults first: a process started with ``&`` from a
non-interactive shell inherits SIGINT ignored, and `dagster dev` would then ignore Ctrl-C
and SIGTERM. The process id (the same after exec) is written to
``$CITYWOK_HOME/dagster-dev.pid``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .embedded import prepare_dagster_home
from .settings import citywok_home

REPO_WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"


def dagster_dev_command(host: str, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "dagster", "dev", "--host", host, "--port", str(port)]
    if REPO_WORKSPACE.is_file():
        return [*cmd, "--workspace", str(REPO_WORKSPACE)]
    return [*cmd, "--module-name", "citywok_pipeline.definitions"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m citywok_pipeline.devserver", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="the address the UI listens on")
    parser.add_argument(
        "--port", type=int, default=3000, help="the UI's port (`make dev PORT=...`; 3000)"
    )
    args = parser.parse_args(argv)

    home = citywok_home()
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CITYWOK_HOME=str(home))
    if not env.get("CITYWOK_MEDIA_ROOT"):
        media = home / "demo-media"
        if not media.is_dir() or not any(media.rglob("*.*")):
            from .demo.__main__ import DEMO_LIBRARY
            from .demo.library import generate_library

            sys.stderr.write(f"generating the demo library in {media}\n")
            generate_library(media, **DEMO_LIBRARY, progress=True)  # type: ignore[arg-type]
        env["CITYWOK_MEDIA_ROOT"] = str(media)
    if not env.get("DAGSTER_HOME"):  # one set by the caller is used as it is
        env["DAGSTER_HOME"] = str(prepare_dagster_home(home / "dagster"))
    (home / "dagster-dev.pid").write_text(f"{os.getpid()}\n")
    sys.stderr.write(
        f"Dagster UI on http://{args.host}:{args.port}  (media {env['CITYWOK_MEDIA_ROOT']}, "
        f"instance {env['DAGSTER_HOME']}; Ctrl-C stops it)\n"
    )
    sys.stderr.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    cmd = dagster_dev_command(args.host, args.port)
    os.execve(cmd[0], cmd, env)
    return 127  # not reached: execve replaces this process or raises


if __name__ == "__main__":
    sys.exit(main())
