"""Training data for the default models: Banking77 splits and out-of-domain text (pure python)."""
