"""beanstalk-py: a beanstalkd-compatible work-queue daemon on trio."""

__version__ = "0.1.0"
