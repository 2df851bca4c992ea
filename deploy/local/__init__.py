"""The local mesh launcher behind `make run` and the test fixtures."""
