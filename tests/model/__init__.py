"""Pure reference models that integration tests compare the real pipeline against."""
