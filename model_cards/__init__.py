# Installed as the package `jdcl.model_cards` (see setup.py) so that the model-card templates ship with jdcl.
