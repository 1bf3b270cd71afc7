"""The curation loop's pure ML core: reference features and metrics, simulated raters, the
discriminator and the acceptance policy. Nothing here imports Django."""
