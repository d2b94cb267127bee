"""``exchange demo``: the four-agency story on a real federation on this machine.

``run`` tells the story, ``federation`` starts and stops the nodes, ``story``
says what each agency should end up holding. The package uses the client and
the shared rendering and draft modules, never ``exchange.cli``: the CLI's
``demo`` subcommand imports this package, not the other way round.
"""

from exchange.demo.run import run_demo

__all__ = ["run_demo"]
