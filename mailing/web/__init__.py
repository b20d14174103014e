"""The thin web layer: routes that read like the HTTP contract, and the pages."""
