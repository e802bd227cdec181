"""Our own asyncio SIP user agent: messages, transports, transactions, dialogs, calls."""
