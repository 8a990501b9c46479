"""Ways to run a model server behind one interface: Docker Engine API, child process, external."""
