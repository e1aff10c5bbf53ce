"""Layer 3: from a trained candidate to the champion: the gates, the MLflow registry and its
aliases, lineage, the pull-request report and the first champion of a new stack."""
