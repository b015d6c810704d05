"""Chinese text stages: normalisation, tokenisation and PII masking."""
