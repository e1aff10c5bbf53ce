"""Layer 1: the model as code: features, the skops artifact, metrics, explanations, fairness
slices, model comparison statistics and the verdict data of a gate. Used by the pipeline, the
promotion commands, the server and the monitor alike, so there is no train/serve skew."""
