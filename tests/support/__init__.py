"""What the tests share: fakes behind the services' interfaces and the servers' helpers."""
