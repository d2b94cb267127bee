"""Generated protobuf and gRPC code for package exchange.v1 (see scripts/gen_protos.py)."""
