"""`python -m app.local_model --host 127.0.0.1 --port P --alias NAME`: see launcher.py."""

from app.local_model.launcher import main

raise SystemExit(main())
