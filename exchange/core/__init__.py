"""Identity, markings and the disclosure decision: pure code, no I/O.

Nothing in this package imports gRPC, SQLAlchemy or touches files or sockets,
so every rule can be read top to bottom and tested exhaustively.
"""
