"""The gRPC node: authentication, the services, and the server that hosts them."""
