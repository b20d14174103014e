"""Comms staff: who they are and what they may do (members), their API tokens (apitokens), how
their secrets are kept (passwords), console sign-in (signin) and sessions (sessions), and their
second factors (factors, totp, passkeys). Nothing here imports the web layer.
"""
