"""The webRtc medium: a WebRTC client (a browser) joins a call through a WHIP endpoint (RFC 9725).

`offer` checks the client's SDP, `ice` chooses the host addresses ICE offers, `tracks` carries audio between
aiortc's frames and the call's PCM, `transport` is the call's far end (a CallTransport), `calls` runs the
sessions, `routes` is the HTTP side (the joinUrl and its session URL).
"""
