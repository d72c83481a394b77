"""``python -m mlops_dev.datagen``: write synthetic daily batches (see ``mlops_dev.datagen``)."""

from __future__ import annotations

from mlops_dev.datagen import main

raise SystemExit(main())
