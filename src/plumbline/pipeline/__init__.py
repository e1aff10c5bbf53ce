"""Layer 2: the DVC stages, in data-flow order: ingest, validate, featurize, train, evaluate.
Each module holds a pure function over typed inputs and outputs and a thin ``run`` that reads
the stage's declared deps and writes its declared outs."""
