"""A real MTA for the deliverability tests: Debian's postfix run from a private configuration
directory (postfix.py), a "mailbox server" it relays to (mailbox.py), and the bounce and
complaint messages real servers send (messages.py)."""
