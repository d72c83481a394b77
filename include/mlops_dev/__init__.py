"""Development tools, outside the product package the images install: the demo, benchmarks, synthetic
data generators and the helper that runs local services for the demo and the tests."""
