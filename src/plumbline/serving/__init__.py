"""Online prediction: the LitServe server for the champion model (deployable in serve/).

Data flows one way: this package uses the contract, model and registry code of the pipeline;
nothing in the pipeline imports it.
"""
