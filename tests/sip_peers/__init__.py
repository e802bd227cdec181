"""Real SIP peers for the end-to-end tests: SIPp (scenarios/*.xml) and headless baresip, each run as a
bounded subprocess on free loopback ports, its logs kept in the test's tmp_path."""
