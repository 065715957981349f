"""``python -m relay.simulator --port 8080``: run the simulator until interrupted."""

from relay.simulator.cli import main

raise SystemExit(main())
