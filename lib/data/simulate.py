"""Former place of the simulator's command line: `python -m lib.data.simulate ...` still works and
runs `python -m lib.sim ...` (same flags) after a deprecation warning."""
from __future__ import annotations

import logging
import runpy

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("lib.sim").warning("`python -m lib.data.simulate` is deprecated; use `python -m lib.sim`")
    runpy.run_module("lib.sim", run_name="__main__", alter_sys=True)
