"""Gates (drift, quality, fairness, champion) and monitoring of scored batches, with their HTML reports."""
