"""Layer 0: what every other layer shares: the data contract, settings, paths, errors, file
formats, and the MLflow set-up. Imports nothing else of plumbline."""
