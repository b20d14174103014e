"""Comms staff: who they are and what they may do (members), how their secrets are kept
(passwords), and their console sessions (sessions, signin). Nothing here imports the web layer.
"""
