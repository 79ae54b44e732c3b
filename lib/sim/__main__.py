"""Write simulated shards: `python -m lib.sim --config config/sim/demo.yaml --out DIR [--events N]
[--shards K] [--format root|npz] [--seed S]` (physics in lib.sim.physics, events in lib.sim.events)."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from lib.config.load import ConfigError
from lib.sim.events import load_sim_config, write_shards

log = logging.getLogger("lib.sim")


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: parse -> config -> write shards."""
    parser = argparse.ArgumentParser(prog="python -m lib.sim", description="Fast toy simulation of gamma showers in the detector, written as ROOT or npz shards.")
    parser.add_argument("--config", type=Path, help="simulation YAML (default: built-in defaults)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    parser.add_argument("--events", type=int, help="total events (overrides the YAML)")
    parser.add_argument("--shards", type=int, help="number of shard files (overrides the YAML)")
    parser.add_argument("--format", choices=["root", "npz"], help="output format (overrides the YAML)")
    parser.add_argument("--seed", type=int, help="random seed (overrides the YAML)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {key: getattr(args, key) for key in ("events", "shards", "format", "seed")}
    try:
        cfg = load_sim_config(args.config, {k: v for k, v in overrides.items() if v is not None})
        started = time.perf_counter()
        paths = write_shards(cfg, args.out)
    except (ConfigError, OSError) as err:  # OSError: an output directory that cannot be written
        parser.exit(2, f"error: {err}\n")
    seconds = time.perf_counter() - started
    log.info("wrote %d events in %d shards to %s in %.1f s (%.0f events/s)",
             cfg.events, len(paths), args.out, seconds, cfg.events / seconds)


if __name__ == "__main__":
    main()
