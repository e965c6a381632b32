"""``python -m fastattn.cli ...`` is ``fastattn ...``."""

from fastattn.cli.entry import main

main()
