"""Run the sample's stack as local processes, for people and for the test suite."""
