"""``python -m visuomotor_models.experiment CONFIG``: see :mod:`.cli`."""

from visuomotor_models.experiment.cli import main

raise SystemExit(main())
