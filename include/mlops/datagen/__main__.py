"""``python -m mlops.datagen``: write synthetic daily batches (see ``mlops.datagen``)."""

from __future__ import annotations

from mlops.datagen import main

raise SystemExit(main())
