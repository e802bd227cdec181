"""Requests callbridge sends to the user's own servers (batch webhooks, the SIP fallback handler)."""
