"""TAXII 2.1, read-only: the node's records as STIX 2.1 collections over HTTPS with mutual TLS."""
