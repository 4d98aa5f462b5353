"""``python -m rtgate`` runs the command line."""

from rtgate.cli import main

main()
