"""``exchange console``: a local web console for the person whose profile it is given.

It listens on 127.0.0.1 only and talks to the user's own node over the same gRPC API as the
command line, with the user's certificate and key (the node's rules and its one disclosure
decision are unchanged: the console is a client). ``guard`` keeps other web pages out,
``app`` has the pages, ``serve`` runs them on 127.0.0.1, ``forms`` reads the record form,
``views`` shapes what is shown, ``run`` is what `exchange console` starts.
"""
