"""`python -m engine --port N [--models baseline,admet] [--workers 1] [--faults]`.

Loads the models (the baseline's artifacts come from `make engine`: build/engine/), then serves.
Prints `engine listening on http://HOST:PORT` once ready. A model that cannot load is listed under
"unavailable" in /v1/models with the reason; the engine still serves the others.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from engine import telemetry
from engine.faults import Faults
from engine.jobs import Jobs
from engine.models import Baseline, Model
from engine.server import EngineServer

DEFAULT_ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "engine"
log = logging.getLogger("engine")


def load_models(names: list[str], artifacts: Path) -> tuple[dict[str, Model], list[dict[str, str]]]:
    models: dict[str, Model] = {}
    unavailable = []
    for name in names:
        try:
            if name == "baseline":
                models["baseline"] = Baseline(artifacts)
            elif name in ("admet", "admet-ai"):
                from engine.admet import AdmetAI  # imports torch only when asked for

                models["admet-ai"] = AdmetAI()
            else:
                raise ValueError(f"unknown model {name!r} (choose from baseline, admet)")
        except FileNotFoundError as exc:
            unavailable.append({"name": name, "reason": f"not built ({exc.filename}): run `make engine`"})
        except Exception as exc:
            log.exception("model %s failed to load", name)
            unavailable.append({"name": name, "reason": f"{type(exc).__name__}: {exc}"})
    return models, unavailable


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Molbridge AI prediction engine")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MOLBRIDGE_ENGINE_PORT", "8090")))
    parser.add_argument("--models", default="baseline,admet")
    parser.add_argument("--workers", type=int, default=1, help="jobs computed in parallel")
    parser.add_argument("--artifacts", type=Path,
                        default=Path(os.environ.get("MOLBRIDGE_ENGINE_ARTIFACTS", DEFAULT_ARTIFACTS)))
    parser.add_argument("--faults", action="store_true",
                        default=os.environ.get("MOLBRIDGE_ENGINE_FAULTS") == "1",
                        help="enable the /v1/_faults admin endpoint (tests only)")
    args = parser.parse_args()
    logging.basicConfig(level=os.environ.get("MOLBRIDGE_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("lightning", "pytorch_lightning", "lightning.pytorch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    stop_tracing = telemetry.configure()
    models, unavailable = load_models([n.strip() for n in args.models.split(",") if n.strip()], args.artifacts)
    if not models:
        log.error("no model could be loaded: %s", unavailable)
        sys.exit(1)
    faults = Faults() if args.faults else None
    server = EngineServer((args.host, args.port), Jobs(models, faults or Faults(), args.workers), faults,
                          unavailable)
    # SIGTERM (how the stack stops children) ends serve_forever like Ctrl-C, so the finally runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host, port = server.server_address[:2]
    print(f"engine listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        stop_tracing()


if __name__ == "__main__":
    main()
