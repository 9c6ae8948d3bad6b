"""``python -m frankenllama VERB …``: the command line (see ``frankenllama.cli``)."""

from frankenllama.cli import main

raise SystemExit(main())
