"""Side-by-side benchmarks of beanstalk-py against the real beanstalkd (see bench/README.md)."""
