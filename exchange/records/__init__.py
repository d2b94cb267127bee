"""Records and their signatures: envelopes, validation, normalisation."""
