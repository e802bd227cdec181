"""callbridge: phone calls to voice AI agents."""
