"""Entry point of `pulumi up` (Pulumi.yaml: main: infra/). Wiring only: see infra/program.py."""

import sys
from pathlib import Path

# Pulumi runs this directory as a script: it puts infra/ itself on sys.path (where config.py, network.py or
# layout.py would shadow other modules of the same name) and not the project root
# (where infra, rendering and topology live). Swap them.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "infra"]
sys.path.insert(0, str(_ROOT))

from infra.program import main  # noqa: E402

main()
