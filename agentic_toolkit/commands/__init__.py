"""Sub-commands of the ``agentic-toolkit`` CLI (see :mod:`agentic_toolkit.cli`)."""
