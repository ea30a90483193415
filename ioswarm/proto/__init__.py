"""Code generated from protos/ioswarm.proto."""
