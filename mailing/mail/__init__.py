"""The one way out: every email the service sends is built, handed to the relay and settled here.

- builder.py: the message (both parts, headers, list headers, placeholders, link URLs), built
  once and personalised per copy;
- relay.py: the only module that talks SMTP (one connection, failures classified);
- lanes.py: the connection policy (persistent relay connections per worker, a global cap);
- pipeline.py: the one claim -> build copies -> send -> settle loop; a source (update
  deliveries, weekly summaries, notices) supplies its claim, its copy builder and its settle
  statements.
"""
